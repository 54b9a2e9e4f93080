//! A harness for integration tests: the real `sluice` and `sluice-echo` binaries on
//! loopback, driven by a real HTTP client.
#![allow(dead_code)]

pub mod grpc;
pub mod held;
pub mod jwt;
pub mod origin;
pub mod raw;
pub mod tls;
pub mod upstream_tls;
pub mod websocket;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Kills the child when dropped, so a failing test leaves nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real `redis-server` on 127.0.0.1, without persistence, stopped when dropped.
pub struct RedisServer {
    child: Option<Reaped>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = closed_port("127.0.0.1").port();
        let mut server = RedisServer { child: None, port };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt install redis-server; .ci/run does)");
        self.child = Some(Reaped(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open but
    /// nothing answers, like a Redis stuck behind a dead network path.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").0.id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

/// One `sluice-echo` process serving several loopback addresses.
pub struct Echo {
    _child: Reaped,
    pub addrs: Vec<SocketAddr>,
}

impl Echo {
    /// Listens on port 0 of each given loopback IP, and learns the ports it got.
    pub fn start(ips: &[&str]) -> Echo {
        let addrs: Vec<String> = ips.iter().map(|ip| format!("{ip}:0")).collect();
        Echo::start_at(&addrs)
    }

    /// Listens on each given address (`IP:PORT`, port 0 for any).
    pub fn start_at(addrs: &[String]) -> Echo {
        let ips = addrs;
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-echo"));
        for addr in addrs {
            command.arg("--listen").arg(addr);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sluice-echo");
        let stdout = child.stdout.take().expect("echo stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        while addrs.len() < ips.len() {
            let line = lines
                .next()
                .expect("echo exited early")
                .expect("echo stdout");
            let addr = line
                .rsplit(' ')
                .next()
                .expect("address")
                .parse()
                .expect("echo address");
            addrs.push(addr);
        }
        Echo {
            _child: Reaped(child),
            addrs,
        }
    }
}

/// A port nothing listens on: bound once, then released.
pub fn closed_port(ip: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind");
    listener.local_addr().expect("addr")
}

/// A running `sluice run --manifests DIR`.
pub struct Sluice {
    child: Reaped,
    pub http: SocketAddr,
    /// Present when started with `--https-addr`.
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Sluice {
    /// Starts Sluice on `dir` with ephemeral ports and waits until it is ready.
    pub async fn start(dir: &Path, extra: &[&str]) -> Sluice {
        let mut args = vec!["--manifests".to_owned(), dir.display().to_string()];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Sluice::launch(&args, &[], dir).await
    }

    /// Starts `sluice run ARGS` with ephemeral ports and extra environment, and waits
    /// until it is ready.
    pub async fn launch(args: &[String], envs: &[(&str, &str)], dir: &Path) -> Sluice {
        let sluice = Sluice::spawn(args, envs, dir);
        sluice.wait_ready().await;
        sluice
    }

    /// Starts `sluice run ARGS` and waits only until it listens.
    pub fn spawn(args: &[String], envs: &[(&str, &str)], dir: &Path) -> Sluice {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .envs(envs.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = child.stderr.take().expect("sluice stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let log_for_thread = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "listening"
                {
                    let addr = |field: &str| {
                        event[field]
                            .as_str()
                            .and_then(|a| a.parse::<SocketAddr>().ok())
                    };
                    if let (Some(http), Some(admin)) = (addr("http"), addr("admin")) {
                        let _ = found_tx.send((http, addr("https"), admin));
                    }
                }
                log_for_thread.lock().expect("log").push(line);
            }
        });
        let (http, https, admin) = found_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("sluice did not start: {:?}", log.lock().expect("log")));
        Sluice {
            child: Reaped(child),
            http,
            https,
            admin,
            dir: dir.to_path_buf(),
            log,
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(reply) = self.admin_get("/readyz").await
                && reply.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sluice never became ready: {:?}",
                self.log.lock().expect("log")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        send(self.http, "GET", host, path, &[], Bytes::new())
            .await
            .expect("request through sluice")
    }

    pub async fn admin_get(&self, path: &str) -> Result<Reply, String> {
        send(self.admin, "GET", "admin", path, &[], Bytes::new()).await
    }

    /// The snapshot generation as `/readyz?verbose` reports it.
    pub async fn generation(&self) -> u64 {
        let reply = self.admin_get("/readyz?verbose").await.expect("readyz");
        reply
            .body
            .lines()
            .find_map(|line| line.strip_prefix("snapshot generation: "))
            .and_then(|n| n.parse().ok())
            .expect("generation line")
    }

    /// Waits (up to 5 s) until the served generation is at least `wanted`.
    pub async fn wait_for_generation(&self, wanted: u64) {
        self.eventually(Duration::from_secs(5), "change applied", || async {
            self.generation().await >= wanted
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Kills the process at once (SIGKILL): a crash, with no clean-up.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Stops the process as Kubernetes does, with SIGTERM, and waits for it to exit; its
    /// exit code, or `None` if it did not exit in time.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.send_sigterm();
        self.wait_exit(within)
    }

    /// Sends SIGTERM, as Kubernetes does to a pod it stops, without waiting.
    pub fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", self.pid());
    }

    /// The value of one series from `/metrics`, named with its labels exactly as printed
    /// (`sluice_controller_leader`, `name{label="v"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.admin_get("/metrics").await.ok()?.body;
        text.lines().find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
    }

    /// The log lines so far, as JSON events.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits for the process to exit; its exit code, or `None` if it did not exit in time.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls until `check` passes or `within` runs out; returns the time it took.
    pub async fn eventually<F, Fut>(&self, within: Duration, what: &str, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(within, what, async || check().await).await
    }
}

/// Polls `check` every 10 ms until it holds; returns how long it took, or panics with
/// `what` once `within` is over.
pub async fn eventually(
    within: Duration,
    what: &str,
    check: impl AsyncFnMut() -> bool,
) -> Duration {
    match holds_within(within, check).await {
        Some(took) => took,
        None => panic!("{what}: not within {within:?}"),
    }
}

/// Polls `check` every 10 ms until it holds; how long that took, or `None` once `within`
/// is over. For checks that are expected to fail.
pub async fn holds_within(
    within: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// Reads a whole response.
    pub async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The echo server's JSON summary.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not an echo answer: {} {}", self.status, self.body))
    }

    /// The address of the echo listener that answered.
    pub fn echo_addr(&self) -> Option<String> {
        self.headers
            .get("x-echo-addr")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request with a fresh client (tests that need keep-alive build their own).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, String> {
    send_with(&client(), addr, method, host, path, headers, body).await
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    Reply::read(response).await
}

pub fn shared_client() -> Client<HttpConnector, Full<Bytes>> {
    client()
}

/// A fresh folder for manifests, removed when dropped.
pub struct ManifestDir(pub PathBuf);

impl ManifestDir {
    pub fn new(name: &str) -> ManifestDir {
        let dir = std::env::temp_dir().join(format!("sluice-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        ManifestDir(dir)
    }

    /// Writes a file atomically (write then rename), as config management tools do.
    pub fn write(&self, file: &str, text: &str) {
        let temporary = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&temporary, text).expect("write");
        std::fs::rename(&temporary, self.0.join(file)).expect("rename");
    }

    /// Writes in place, truncating first: what an editor without atomic save does.
    pub fn overwrite(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).expect("write");
    }
}

impl Drop for ManifestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// YAML for a Service with one port named `http` and one EndpointSlice with `addrs`.
/// `not_ready` addresses are listed with `ready: false`.
pub fn service_yaml(
    namespace: &str,
    name: &str,
    port: u16,
    addrs: &[SocketAddr],
    not_ready: &[SocketAddr],
) -> String {
    let mut by_port: BTreeMap<u16, Vec<(String, bool)>> = BTreeMap::new();
    for addr in addrs {
        by_port
            .entry(addr.port())
            .or_default()
            .push((addr.ip().to_string(), true));
    }
    for addr in not_ready {
        by_port
            .entry(addr.port())
            .or_default()
            .push((addr.ip().to_string(), false));
    }
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ports:\n  - {{name: http, port: {port}}}\n"
    );
    // Each endpoint port needs its own slice, as Kubernetes does for differing target ports.
    for (index, (endpoint_port, endpoints)) in by_port.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{index}\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {endpoint_port}}}\nendpoints:\n"
        ));
        for (ip, ready) in endpoints {
            yaml.push_str(&format!(
                "- addresses: [{ip}]\n  conditions: {{ready: {ready}}}\n"
            ));
        }
    }
    yaml
}

pub const INGRESS_CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: sluice}\nspec: {controller: sluice.dev/ingress-controller}\n";
