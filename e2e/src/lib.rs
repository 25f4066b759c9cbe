//! Cairn's end-to-end infrastructure: network namespaces for tests (`netns`). The lab API server
//! (issue 4), routers in namespaces (issue 9) and the lab (issue 10) join it.

pub mod netns;
