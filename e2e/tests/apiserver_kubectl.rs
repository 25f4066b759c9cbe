//! The lab API server driven by the real `kubectl` (Debian `kubernetes-client`, v1.32): apply of
//! CRDs, custom and built-in objects (create and update paths, without `--validate=false`),
//! `get -o json`, `get -w`, `patch`, `delete`, Cairn's own manifests, and the
//! `cairn-lab-apiserver` binary run as a separate process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cairn_e2e::apiserver::{LabApiServer, Options};
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Lab {
    _server: LabApiServer,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn lab() -> Lab {
    assert!(
        Path::new(KUBECTL).exists(),
        "kubectl is missing: apt-get install kubernetes-client"
    );
    let server = LabApiServer::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    Lab {
        _server: server,
        dir,
        kubeconfig,
    }
}

fn kubectl_cmd(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(KUBECTL);
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args);
    c
}

/// Run kubectl to completion off the runtime's threads; returns (success, stdout, stderr).
async fn kubectl_in(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = kubectl_cmd(kubeconfig, cache, args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Lab {
    async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        kubectl_in(&self.kubeconfig, &self.dir.path().join("cache"), args).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}{out}");
        out
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    subresources: {status: {}}
";

fn objects(size: u32, value: &str) -> String {
    format!(
        "apiVersion: example.com/v1
kind: Widget
metadata: {{name: w1}}
spec: {{size: {size}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: c1}}
data: {{a: \"{value}\"}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_crd_and_objects_then_gets_patches_and_deletes_them() {
    let lab = lab().await;
    let crd = lab.file("crd.yaml", WIDGET_CRD);
    let out = lab.ok(&["apply", "-f", &crd]).await;
    assert!(out.contains("widgets.example.com created"), "{out}");
    let out = lab
        .ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd/widgets.example.com",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    let objs = lab.file("objs.yaml", &objects(1, "1"));
    let out = lab.ok(&["apply", "-f", &objs]).await;
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    assert!(out.contains("configmap/c1 created"), "{out}");
    // Second apply: the update path (merge patch for the CR, strategic merge for the ConfigMap).
    let objs = lab.file("objs.yaml", &objects(2, "2"));
    let out = lab.ok(&["apply", "-f", &objs]).await;
    assert!(out.contains("widget.example.com/w1 configured"), "{out}");
    let w: Value = serde_json::from_str(&lab.ok(&["get", "wd", "w1", "-o", "json"]).await).unwrap();
    assert_eq!(w["spec"]["size"], 2);
    assert_eq!(w["metadata"]["generation"], 2);
    let c: Value =
        serde_json::from_str(&lab.ok(&["get", "configmap", "c1", "-o", "json"]).await).unwrap();
    assert_eq!(c["data"]["a"], "2");

    lab.ok(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"color":"red"}}"#,
    ])
    .await;
    lab.ok(&[
        "patch",
        "cm",
        "c1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/b","value":"3"}]"#,
    ])
    .await;
    lab.ok(&["patch", "cm", "c1", "-p", r#"{"data":{"c":"4"}}"#])
        .await;
    let w: Value = serde_json::from_str(
        &lab.ok(&["get", "widgets.example.com", "w1", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(
        (w["spec"]["size"].clone(), w["spec"]["color"].clone()),
        (2.into(), "red".into())
    );
    let c: Value = serde_json::from_str(&lab.ok(&["get", "cm", "c1", "-o", "json"]).await).unwrap();
    assert_eq!(c["data"], serde_json::json!({"a": "2", "b": "3", "c": "4"}));

    lab.ok(&["delete", "-f", &objs]).await;
    let (ok, _, err) = lab.kubectl(&["get", "wd", "w1"]).await;
    assert!(!ok);
    assert!(err.contains("NotFound"), "{err}");
    lab.ok(&["delete", "-f", &crd]).await;
    let (ok, _, _) = lab.kubectl(&["get", "widgets.example.com"]).await;
    assert!(!ok, "widgets are still served after their CRD was deleted");
}

fn service(ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: LoadBalancer\n  ports:\n{ports}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_updates_service_ports_by_merge_key() {
    let lab = lab().await;
    let f = lab.file("svc.yaml", &service("  - {port: 80}\n  - {port: 443}\n"));
    lab.ok(&["apply", "-f", &f]).await;
    // Name one port, add one, keep 443 as it is: kubectl's strategic merge patch lists only the
    // changed entries, so 443 survives only if lists merge by key.
    let f = lab.file(
        "svc.yaml",
        &service("  - {port: 80, name: http}\n  - {port: 443}\n  - {port: 8080, name: alt}\n"),
    );
    lab.ok(&["apply", "-f", &f]).await;
    let ports = |out: &str| -> Vec<(u64, String)> {
        let svc: Value = serde_json::from_str(out).unwrap();
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let out = lab.ok(&["get", "svc", "web", "-o", "json"]).await;
    assert_eq!(
        ports(&out),
        [
            (80, "http".into()),
            (443, String::new()),
            (8080, "alt".into())
        ]
    );
    // Drop one: kubectl sends `$patch: delete` for it.
    let f = lab.file(
        "svc.yaml",
        &service("  - {port: 80, name: http}\n  - {port: 8080, name: alt}\n"),
    );
    lab.ok(&["apply", "-f", &f]).await;
    let out = lab.ok(&["get", "svc", "web", "-o", "json"]).await;
    assert_eq!(ports(&out), [(80, "http".into()), (8080, "alt".into())]);
}

/// Lines from a child's stdout, read on a thread so the test can wait with a timeout.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_line(rx: mpsc::Receiver<String>, want: &str) -> mpsc::Receiver<String> {
    let want = want.to_owned();
    tokio::task::spawn_blocking(move || {
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.split_whitespace().collect::<Vec<_>>().join(" ") == want => break,
                Ok(_) => {}
                Err(e) => panic!("no line {want:?}: {e}"),
            }
        }
        rx
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_a_change() {
    let lab = lab().await;
    let objs = lab.file(
        "objs.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: \"1\"}\n",
    );
    lab.ok(&["apply", "-f", &objs]).await;
    let mut child = KillOnDrop(
        kubectl_cmd(
            &lab.kubeconfig,
            &lab.dir.path().join("cache"),
            &[
                "get",
                "cm",
                "-w",
                "--no-headers",
                "-o",
                "custom-columns=NAME:.metadata.name,A:.data.a",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let rx = lines_of(&mut child.0);
    let rx = wait_for_line(rx, "c1 1").await;
    lab.ok(&[
        "patch",
        "cm",
        "c1",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ])
    .await;
    wait_for_line(rx, "c1 2").await;
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_cairn_crds_then_the_examples() {
    let lab = lab().await;
    let m = manifests();
    let out = lab
        .ok(&["apply", "-f", &m.join("crds").to_string_lossy()])
        .await;
    assert!(out.contains("ipaddresspools.cairn.io created"), "{out}");
    // The examples live in the namespace the base manifests create.
    lab.ok(&["apply", "-f", &m.join("namespace.yaml").to_string_lossy()])
        .await;
    let out = lab
        .ok(&["apply", "-f", &m.join("examples").to_string_lossy()])
        .await;
    assert!(out.contains("created"), "{out}");
    let pools: Value = serde_json::from_str(
        &lab.ok(&["get", "ipaddresspools.cairn.io", "-A", "-o", "json"])
            .await,
    )
    .unwrap();
    assert!(!pools["items"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_whole_kustomization() {
    let lab = lab().await;
    let out = lab
        .ok(&["apply", "-k", &manifests().to_string_lossy()])
        .await;
    assert!(out.contains("created"), "{out}");
    // Applying again changes nothing.
    let out = lab
        .ok(&["apply", "-k", &manifests().to_string_lossy()])
        .await;
    assert!(!out.contains("created"), "{out}");
}

/// The binary, killed with SIGTERM (then SIGKILL) when dropped.
struct Binary(Child);

impl Binary {
    fn start(args: &[&str]) -> (Self, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-lab-apiserver"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        let me = Self(child);
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("address line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (me, url)
    }

    fn stop(mut self) {
        let pid = i32::try_from(self.0.id()).unwrap();
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_kubectl_takes_faults_from_outside_and_persists_state() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let state = dir.path().join("state.json");
    let cache = dir.path().join("cache");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        kc.to_str().unwrap(),
        "--state-file",
        state.to_str().unwrap(),
    ];
    let (bin, url) = Binary::start(&args);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let cm_file = dir.path().join("cm.yaml");
    std::fs::write(
        &cm_file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\ndata: {a: \"1\"}\n",
    )
    .unwrap();
    let (ok, _, err) = kubectl_in(&kc, &cache, &["create", "-f", cm_file.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl_in(&kc, &cache, &["get", "--raw", "/debug/requests"]).await;
    assert!(ok, "{err}");
    let counts: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts["byVerbResource"]["create configmaps"], 1);
    // Fault it from outside: cut for a while, then kubectl fails.
    let faults = dir.path().join("faults.json");
    std::fs::write(&faults, r#"{"unreachableForMs": 60000}"#).unwrap();
    let (ok, _, err) = kubectl_in(
        &kc,
        &cache,
        &[
            "create",
            "--raw",
            "/debug/faults",
            "-f",
            faults.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, _) = kubectl_in(
        &kc,
        &cache,
        &["get", "configmap", "kept", "--request-timeout=5s"],
    )
    .await;
    assert!(!ok, "kubectl reached an unreachable server");
    bin.stop();

    let (bin, _url) = Binary::start(&args);
    let (ok, out, err) = kubectl_in(&kc, &cache, &["get", "configmap", "kept", "-o", "json"]).await;
    assert!(ok, "{err}");
    let cm: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cm["data"]["a"], "1");
    bin.stop();
}
