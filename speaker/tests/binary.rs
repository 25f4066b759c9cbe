//! The `cairn-speaker` binary as a process in a node namespace, against the lab API server:
//! it logs `speaker ready` and answers `/readyz` once it may announce, answers ARP for the VIP it
//! owns, and on SIGTERM withdraws, releases its Lease, logs `speaker stopped` and exits 0.
//!
//! The API server listens on 127.0.0.1 of the host namespace; a small in-test forwarder makes the
//! same address answer inside the node namespace, so the kubeconfig works unchanged there.
//! Failover between several speaker processes is tested in `e2e/tests/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_arp::MacAddr;
use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_e2e::netns::Netns;

mod speaker_lab;

use speaker_lab::{
    arping, cluster, eventually, forward_into, lab, lease_of, neighbour, DEADLINE, NODES, VIP,
};

const METRICS_ADDR: &str = "127.0.0.1:7473";

/// The speaker process, killed on drop if still running; its output collected as it comes.
struct Process {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut argv = vec![env!("CARGO_BIN_EXE_cairn-speaker")];
        argv.extend_from_slice(args);
        let mut child = ns
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn-speaker");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut all = output.lock().unwrap_or_else(|e| e.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        Self { child, output }
    }

    fn log(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the speaker did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the metrics address, from inside `ns`; the status line.
fn http_status(ns: &Netns, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.0\r\nHost: speaker\r\n\r\n");
    ns.run(move || {
        let mut stream = std::net::TcpStream::connect(METRICS_ADDR).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.lines().next().map(str::to_owned)
    })
    .expect("enter namespace")
    .unwrap_or_default()
}

/// A kubeconfig file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_binary_gets_ready_answers_arp_and_on_sigterm_withdraws_releases_and_exits_zero() {
    let lab = lab();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let server = rt
        .block_on(LabApiServer::start(Options::default()))
        .expect("lab API server");
    let api = server.client().expect("client");
    rt.block_on(cluster(&api));
    let node = &lab.nodes[0];
    let _forward = forward_into(node, &rt, server.addr());
    let kubeconfig = TempFile(std::env::temp_dir().join(format!(
        "cairn-speaker-binary-test-{}.kubeconfig",
        std::process::id()
    )));
    server
        .write_kubeconfig(&kubeconfig.0)
        .expect("write kubeconfig");
    let mac = MacAddr(node.mac("eth0").expect("mac")).to_string();

    let mut speaker = Process::start(
        node,
        &[
            "--node-name",
            NODES[0],
            "--kubeconfig",
            kubeconfig.0.to_str().expect("utf-8 path"),
            "--metrics-addr",
            METRICS_ADDR,
        ],
    );
    eventually("the speaker logs `speaker ready`", || {
        speaker.log().contains("speaker ready")
    });
    assert!(
        http_status(node, "/readyz").contains("200"),
        "{}",
        speaker.log()
    );
    assert!(http_status(node, "/healthz").contains("200"));
    eventually(&format!("the client learns {VIP} -> {mac}"), || {
        neighbour(&lab.client, VIP).as_deref() == Some(mac.as_str())
    });
    let said = arping(&lab.client, VIP);
    assert!(said.contains(&mac), "no ARP answer: {said}");

    speaker.signal("-TERM");
    let status = speaker.wait();
    let log = speaker.log();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains("speaker stopped"), "{log}");
    let lease = rt.block_on(lease_of(&api, NODES[0]));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease is released:\n{log}"
    );
    let said = arping(&lab.client, VIP);
    assert!(!said.contains(&mac), "still answering after exit: {said}");
}
