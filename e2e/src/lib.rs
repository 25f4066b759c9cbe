//! Cairn's end-to-end infrastructure: network namespaces for tests (`netns`) and real routing
//! daemons in namespaces (`routers`, FRR and GoBGP). The lab API server (issue 4) and the lab
//! (issue 10) join them.

pub mod netns;
pub mod routers;
