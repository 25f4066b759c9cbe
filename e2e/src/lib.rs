//! Cairn's end-to-end infrastructure: network namespaces for tests (`netns`), real routing
//! daemons in namespaces (`routers`, FRR and GoBGP), and the lab API server (`apiserver`), a
//! faithful stand-in for kube-apiserver. The lab and the demo build on these (issue 10).

pub mod apiserver;
pub mod lab;
pub mod netns;
pub mod observer;
pub mod probe;
pub mod routers;
