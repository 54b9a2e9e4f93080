//! The command line: every flag of `sluice run`, `sluice check` and `sluice crds`, and
//! the parsers of their values. Nothing here starts anything; [`crate::run`] does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use sluice_controller::cluster::{EndpointRemap, PublishTarget};
use sluice_controller::compile::CompileOptions;
use sluice_dataplane::snapshot::ObjectRef;

/// A Kubernetes ingress controller that applies changes without reloads.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller and the data plane.
    Run(Box<RunArgs>),
    /// Compile a folder of manifests and print each object's problems; exits 1 on errors.
    Check(CheckArgs),
    /// Print the CustomResourceDefinitions of the sluice.dev resources as YAML.
    Crds,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Folder of YAML manifests (Ingress, IngressClass, Service, EndpointSlice, Secret,
    /// RateLimit, Auth, Cache).
    #[arg(long, env = "SLUICE_MANIFESTS", value_name = "DIR")]
    pub manifests: PathBuf,
    #[command(flatten)]
    pub class: ClassArgs,
}

#[derive(Debug, Args)]
pub struct ClassArgs {
    /// The IngressClass name this controller serves.
    #[arg(
        long,
        env = "SLUICE_INGRESS_CLASS",
        value_name = "NAME",
        default_value = "sluice"
    )]
    pub ingress_class: String,
}

/// Kubernetes API mode only.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Write this Service's address (load balancer, external IPs or cluster IP) to the
    /// status of the Ingresses served.
    #[arg(
        long,
        env = "SLUICE_PUBLISH_SERVICE",
        value_name = "NAMESPACE/NAME",
        conflicts_with = "publish_address"
    )]
    pub publish_service: Option<String>,
    /// Write these IPs or host names to the status of the Ingresses served, comma-separated.
    #[arg(
        long,
        env = "SLUICE_PUBLISH_ADDRESS",
        value_delimiter = ',',
        value_name = "ADDRS"
    )]
    pub publish_address: Vec<String>,
    /// Elect one replica, through a Lease, to write status and Events. Every replica
    /// serves traffic either way.
    #[arg(long, env = "SLUICE_LEADER_ELECT", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "SLUICE_LEASE_NAME",
        value_name = "NAME",
        default_value = "sluice-leader"
    )]
    pub lease_name: String,
    /// Namespace of the Lease [default: POD_NAMESPACE, else the client's namespace].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease lasts without renewal before another replica takes over.
    #[arg(long, env = "SLUICE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_duration: Duration,
    /// This replica's name in the Lease and in Events [default: POD_NAME, else host name
    /// and process id].
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,
    /// Development only: rewrite EndpointSlice addresses from one IPv4 network to another
    /// (`192.0.2.0/24=127.0.0.0/24`), for test clusters whose API server refuses loopback
    /// endpoints. See docs/kubernetes.md.
    #[arg(long, value_name = "FROM=TO", hide = true)]
    pub dev_remap_endpoints: Option<EndpointRemap>,
}

impl ClusterArgs {
    pub(crate) fn publish_target(&self) -> anyhow::Result<PublishTarget> {
        if let Some(service) = &self.publish_service {
            let service = parse_object_ref(service)
                .map_err(|why| anyhow::anyhow!("--publish-service {service:?}: {why}"))?;
            return Ok(PublishTarget::Service(service));
        }
        let addresses: Vec<String> = self
            .publish_address
            .iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect();
        Ok(if addresses.is_empty() {
            PublishTarget::Nothing
        } else {
            PublishTarget::Addresses(addresses)
        })
    }

    pub(crate) fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "sluice".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Standalone mode: read objects from this folder of YAML manifests instead of the
    /// Kubernetes API, and follow its changes. Without it, Sluice uses the in-cluster
    /// service account or KUBECONFIG.
    #[arg(long, env = "SLUICE_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address of the plain HTTP listener (HTTP/1.1 and h2c).
    #[arg(
        long,
        env = "SLUICE_HTTP_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,
    /// Address of the HTTPS listener (TLS 1.2/1.3, HTTP/1.1 and h2 by ALPN), with the
    /// certificates of the Ingresses' `spec.tls` chosen by SNI. Off when not given.
    #[arg(long, env = "SLUICE_HTTPS_ADDR", value_name = "ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// The certificate for hosts without their own, as NAMESPACE/NAME of a TLS Secret.
    /// Without it a self-signed certificate is generated at start-up.
    #[arg(long, env = "SLUICE_DEFAULT_SSL_CERTIFICATE", value_name = "NAMESPACE/NAME", value_parser = parse_object_ref)]
    pub default_ssl_certificate: Option<ObjectRef>,
    /// A client connection with no request in flight for this long is closed (gracefully:
    /// HTTP/2 gets a GOAWAY), so idle HTTP/2 connections do not pile up. Traffic and admin
    /// listeners.
    #[arg(long, env = "SLUICE_CLIENT_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub client_idle_timeout: Duration,
    /// TLS handshakes in progress at once per traffic thread; more connections are closed
    /// at once (counted as `overloaded`).
    #[arg(
        long,
        env = "SLUICE_MAX_TLS_HANDSHAKES",
        value_name = "COUNT",
        default_value_t = 1024
    )]
    pub max_tls_handshakes: usize,
    /// Time a client gets to complete the TLS handshake.
    #[arg(long, env = "SLUICE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tls_handshake_timeout: Duration,
    /// The port HTTP→HTTPS redirects point at: the one clients reach the HTTPS listener
    /// on (443 is left out of the URL).
    #[arg(
        long,
        env = "SLUICE_HTTPS_REDIRECT_PORT",
        value_name = "PORT",
        default_value_t = 443
    )]
    pub https_redirect_port: u16,
    /// Address of the admin listener: /metrics, /healthz, /readyz. Loopback by default, so
    /// only the host (or pod) itself reaches it; for kubelet probes and Prometheus bind the
    /// pod's address or 0.0.0.0, as the Helm chart does.
    #[arg(
        long,
        env = "SLUICE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_addr: SocketAddr,
    /// Connections the admin listener keeps open at once; more are closed as soon as they
    /// are accepted (counted in `sluice_admin_connections_refused_total`). It shares the
    /// process's file descriptors with traffic.
    #[arg(
        long,
        env = "SLUICE_ADMIN_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub admin_max_connections: u32,
    /// Client connections the traffic listeners hold at once, all threads together. At
    /// the cap a new connection closes the connection idle longest (HTTP/1.1: closed;
    /// HTTP/2: GOAWAY, streams finish); with none idle the new one is closed at once.
    /// Counted in `sluice_connections_shed_total`. Default: what fits under the high
    /// memory watermark at 40 KiB a connection, at most half the open-file limit.
    #[arg(
        long,
        env = "SLUICE_MAX_CONNECTIONS",
        value_name = "COUNT",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: Option<u32>,
    /// The memory limit the watermarks apply to, in bytes (suffixes Ki, Mi, Gi): above
    /// 80 % Sluice stops offering keep-alive and closes idle connections sooner, above 90 %
    /// it closes idle connections oldest first. Default: the cgroup's memory limit; none,
    /// no watermarks.
    #[arg(long, env = "SLUICE_MEMORY_LIMIT", value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// A file holding the bearer token of `POST /cache/purge` on the admin listener (mount
    /// it from a Secret); without one the purge endpoint is off.
    #[arg(long, env = "SLUICE_CACHE_PURGE_TOKEN_FILE", value_name = "PATH")]
    pub cache_purge_token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub class: ClassArgs,
    /// Log format.
    #[arg(
        long,
        env = "SLUICE_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log one line per request (target `sluice::access`).
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    pub access_log: bool,
    /// Networks whose X-Forwarded-* headers are believed, comma-separated CIDRs.
    #[arg(
        long,
        env = "SLUICE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Add `Via: <version> <NAME>` to requests and responses.
    #[arg(long, env = "SLUICE_VIA", value_name = "NAME")]
    pub via: Option<String>,
    /// Time allowed to connect to an upstream endpoint.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Time allowed for an upstream to send its response headers, counted from the end of
    /// the request body: the time a client takes to upload does not count.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// How long a client may keep Sluice waiting for the next bytes of a request body; then
    /// the request is answered 408, and the endpoint is not blamed.
    #[arg(long, env = "SLUICE_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub client_body_timeout: Duration,
    /// How long idle upstream connections are kept for reuse.
    #[arg(long, env = "SLUICE_UPSTREAM_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub upstream_idle_timeout: Duration,
    /// Time a client gets to send a request's headers, and to begin its first request on a
    /// new connection (a connection that sends nothing, or part of the HTTP/2 preface, is
    /// closed after it); also how long an idle keep-alive connection stays open, and how
    /// long a connection closed for being idle gets to let go before it is dropped. Traffic
    /// and admin listeners.
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub header_read_timeout: Duration,
    /// Largest request body in bytes; larger requests get 413.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BODY", value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_body: u64,
    /// Largest request header block in bytes; larger requests get 431.
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most header fields in one request; more get 431.
    #[arg(
        long,
        env = "SLUICE_MAX_HEADERS",
        value_name = "COUNT",
        default_value_t = 100
    )]
    pub max_headers: usize,
    /// Extra attempts on other endpoints after a connection failure (idempotent requests
    /// without a body).
    #[arg(
        long,
        env = "SLUICE_RETRIES",
        value_name = "COUNT",
        default_value_t = 2
    )]
    pub retries: u32,
    /// Consecutive failures that eject an endpoint.
    #[arg(
        long,
        env = "SLUICE_EJECT_AFTER",
        value_name = "COUNT",
        default_value_t = 5
    )]
    pub eject_after: u32,
    /// How long an ejected endpoint is left out before it is tried again.
    #[arg(long, env = "SLUICE_EJECT_FOR", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub eject_for: Duration,
    /// After SIGTERM, keep accepting and serving new requests this long, with /readyz
    /// answering 503, so load balancers and kube-proxy stop sending before the listeners
    /// close. Then in-flight requests get --drain-timeout.
    #[arg(long, env = "SLUICE_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_delay: Duration,
    /// How long in-flight requests get to finish on SIGTERM; connections still open then
    /// (an HTTP/2 client that ignores the GOAWAY) are dropped.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// Threads serving traffic, each with its own socket and upstream pool [default: one
    /// per CPU]. The controller runs on two more.
    #[arg(long, env = "SLUICE_WORKER_THREADS", value_name = "COUNT")]
    pub worker_threads: Option<usize>,
    /// How long to gather changes before compiling.
    #[arg(long, env = "SLUICE_DEBOUNCE", default_value = "50ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub debounce: Duration,
    /// Redis for RateLimit policies with `backend: redis`, token revocation and API keys in
    /// Redis, and the shared layer of Cache policies (redis://, or rediss:// for TLS; user
    /// and password in the URL).
    #[arg(
        long,
        env = "SLUICE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Longest wait for Redis on one request before a policy's onBackendFailure applies.
    #[arg(long, env = "SLUICE_REDIS_TIMEOUT", default_value = "50ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub redis_timeout: Duration,
    /// Most keys one RateLimit policy remembers per replica; bounds memory under a flood of
    /// distinct keys.
    #[arg(
        long,
        env = "SLUICE_RATE_LIMIT_KEYS",
        default_value_t = 100_000,
        value_name = "COUNT"
    )]
    pub rate_limit_keys: u64,
}

/// A byte count: a plain number, or with a binary suffix (`512Mi`, `2Gi`), as Kubernetes
/// writes memory limits.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    let multiplier: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "{value:?}: a number of bytes, with Ki, Mi or Gi if any"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{value:?}: a number of bytes above 0, with Ki, Mi or Gi if any"))
}

fn parse_object_ref(value: &str) -> Result<ObjectRef, String> {
    let (namespace, name) = value
        .split_once('/')
        .ok_or_else(|| "expected NAMESPACE/NAME".to_owned())?;
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !valid(namespace) || !valid(name) {
        return Err(format!("{value:?} is not NAMESPACE/NAME of an object"));
    }
    Ok(ObjectRef::new(namespace, name))
}

pub(crate) fn compile_options(class: &ClassArgs) -> CompileOptions {
    CompileOptions {
        ingress_class: class.ingress_class.clone(),
        ..CompileOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_take_kubernetes_binary_suffixes() {
        assert_eq!(parse_bytes("536870912"), Ok(512 << 20));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("64Ki"), Ok(64 << 10));
        for bad in [
            "",
            "0",
            "512M",
            "Mi",
            "-1",
            "1.5Gi",
            "99999999999999999999Gi",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_admin_listener_is_internal_unless_bound_elsewhere() {
        let cli = Cli::try_parse_from(["sluice", "run", "--manifests", "examples"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert!(args.admin_addr.ip().is_loopback(), "{}", args.admin_addr);
        assert_eq!(args.admin_addr.port(), 9090);
        assert_eq!(args.admin_max_connections, 64);
        let refused = Cli::try_parse_from(["sluice", "run", "--admin-max-connections", "0"]);
        assert!(refused.is_err(), "a cap of 0 would refuse every probe");
    }
}
