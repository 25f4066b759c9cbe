//! Shared by the e2e tests and the benchmark: a Cairn [`Speaker`] running on its own thread
//! inside a test namespace, so that every socket it opens lives there.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use cairn_bgp::{PeerConfig, SessionConfig, Speaker, State};
use cairn_e2e::netns::Netns;

/// A speaker whose runtime thread entered a namespace; shut down (Cease to every peer) on drop.
pub struct NsSpeaker {
    pub speaker: Speaker,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsSpeaker {
    pub fn start(ns: &Netns) -> Self {
        let path = format!("/run/netns/{}", ns.name());
        let (speaker_tx, speaker_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).expect("open namespace");
            // SAFETY: setns on a namespace fd we own; it affects only this thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let speaker = Speaker::new();
                speaker_tx.send(speaker.clone()).expect("hand out speaker");
                let _ = stopped.await;
                speaker.shutdown().await;
            });
        });
        let speaker = speaker_rx.recv().expect("speaker started");
        Self {
            speaker,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Removes a peer (Cease NOTIFICATION) from a thread outside the speaker's runtime.
    pub fn remove_peer(&self, peer: std::net::IpAddr) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(self.speaker.remove_peer(peer))
            .expect("known peer");
    }

    /// Waits until the session to `peer` is Established (panics after `timeout`).
    pub fn wait_established(&self, peer: std::net::IpAddr, timeout: Duration) {
        let ok = cairn_e2e::routers::wait_for(timeout, || {
            self.speaker
                .peer_stats()
                .iter()
                .any(|s| s.peer == peer && s.session.state == State::Established)
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "session to {peer} not Established: {:?}",
            self.speaker.peer_stats()
        );
    }
}

impl Drop for NsSpeaker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A peer config with a short hold time and fast retries, as tests want.
pub fn peer(address: &str, local_as: u32, peer_as: u32, router_id: &str) -> PeerConfig {
    let mut session = SessionConfig::new(local_as, peer_as, router_id.parse().unwrap());
    session.connect_retry_max = Duration::from_secs(2);
    PeerConfig::new(address.parse().unwrap(), session)
}

/// Links `router` to `speaker` with a veth pair `r-<tag>` / `s-<tag>` and addresses
/// `<v4net>.1/24` + `<v6net>::1/64` on the router side and `.2` / `::2` on the speaker side.
pub fn link(router: &Netns, speaker: &Netns, tag: &str, v4net: &str, v6net: &str) {
    let here = format!("r-{tag}");
    let there = format!("s-{tag}");
    router.veth(&here, speaker, &there).expect("veth");
    router.addr(&here, &format!("{v4net}.1/24")).expect("addr");
    router.addr(&here, &format!("{v6net}::1/64")).expect("addr");
    speaker
        .addr(&there, &format!("{v4net}.2/24"))
        .expect("addr");
    speaker
        .addr(&there, &format!("{v6net}::2/64"))
        .expect("addr");
}
