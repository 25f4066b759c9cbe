//! BGP sessions to top-of-rack routers: sans-IO session state machine and tokio driver.
//!
//! Empty for now: filled by issue 9 ("BGP speaker").
