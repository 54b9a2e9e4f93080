//! The `sluice` binary: command-line flags and wiring, nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use sluice_controller::cluster::{ClusterConfig, EndpointRemap, PublishTarget, run_cluster};
use sluice_controller::compile::CompileOptions;
use sluice_controller::error::Severity;
use sluice_controller::leader::{LeaseConfig, run_election};
use sluice_controller::publish::Publisher;
use sluice_controller::standalone::{ManifestFolder, run_folder};
use sluice_dataplane::admin::{AdminOptions, serve_admin};
use sluice_dataplane::balance::HealthConfig;
use sluice_dataplane::live::{DataPlane, follow_snapshots};
use sluice_dataplane::metrics::Metrics;
use sluice_dataplane::proxy::{ProxyConfig, TrustedProxies};
use sluice_dataplane::ratelimit::redis::{RedisBackend, RedisRole, RedisSettings};
use sluice_dataplane::server::{
    ListenerConfig, TrafficWorkers, WorkerSockets, bind_shared, memory,
};
use sluice_dataplane::snapshot::{ObjectRef, ServerCertificate};
use sluice_dataplane::tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

// glibc's malloc took about a tenth of the proxy's CPU time under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Kubernetes ingress controller that applies changes without reloads.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller and the data plane.
    Run(Box<RunArgs>),
    /// Compile a folder of manifests and print each object's problems; exits 1 on errors.
    Check(CheckArgs),
    /// Print the CustomResourceDefinitions of the sluice.dev resources as YAML.
    Crds,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Folder of YAML manifests (Ingress, IngressClass, Service, EndpointSlice, Secret,
    /// RateLimit, Auth, Cache).
    #[arg(long, env = "SLUICE_MANIFESTS", value_name = "DIR")]
    manifests: PathBuf,
    #[command(flatten)]
    class: ClassArgs,
}

#[derive(Debug, Args)]
struct ClassArgs {
    /// The IngressClass name this controller serves.
    #[arg(
        long,
        env = "SLUICE_INGRESS_CLASS",
        value_name = "NAME",
        default_value = "sluice"
    )]
    ingress_class: String,
}

/// Kubernetes API mode only.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Write this Service's address (load balancer, external IPs or cluster IP) to the
    /// status of the Ingresses served.
    #[arg(
        long,
        env = "SLUICE_PUBLISH_SERVICE",
        value_name = "NAMESPACE/NAME",
        conflicts_with = "publish_address"
    )]
    publish_service: Option<String>,
    /// Write these IPs or host names to the status of the Ingresses served, comma-separated.
    #[arg(
        long,
        env = "SLUICE_PUBLISH_ADDRESS",
        value_delimiter = ',',
        value_name = "ADDRS"
    )]
    publish_address: Vec<String>,
    /// Elect one replica, through a Lease, to write status and Events. Every replica
    /// serves traffic either way.
    #[arg(long, env = "SLUICE_LEADER_ELECT", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "SLUICE_LEASE_NAME",
        value_name = "NAME",
        default_value = "sluice-leader"
    )]
    lease_name: String,
    /// Namespace of the Lease [default: POD_NAMESPACE, else the client's namespace].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease lasts without renewal before another replica takes over.
    #[arg(long, env = "SLUICE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    lease_duration: Duration,
    /// This replica's name in the Lease and in Events [default: POD_NAME, else host name
    /// and process id].
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    identity: Option<String>,
    /// Development only: rewrite EndpointSlice addresses from one IPv4 network to another
    /// (`192.0.2.0/24=127.0.0.0/24`), for test clusters whose API server refuses loopback
    /// endpoints. See docs/kubernetes.md.
    #[arg(long, value_name = "FROM=TO", hide = true)]
    dev_remap_endpoints: Option<EndpointRemap>,
}

impl ClusterArgs {
    fn publish_target(&self) -> anyhow::Result<PublishTarget> {
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

    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "sluice".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Standalone mode: read objects from this folder of YAML manifests instead of the
    /// Kubernetes API, and follow its changes. Without it, Sluice uses the in-cluster
    /// service account or KUBECONFIG.
    #[arg(long, env = "SLUICE_MANIFESTS", value_name = "DIR")]
    manifests: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Address of the plain HTTP listener (HTTP/1.1 and h2c).
    #[arg(
        long,
        env = "SLUICE_HTTP_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Address of the HTTPS listener (TLS 1.2/1.3, HTTP/1.1 and h2 by ALPN), with the
    /// certificates of the Ingresses' `spec.tls` chosen by SNI. Off when not given.
    #[arg(long, env = "SLUICE_HTTPS_ADDR", value_name = "ADDR")]
    https_addr: Option<SocketAddr>,
    /// The certificate for hosts without their own, as NAMESPACE/NAME of a TLS Secret.
    /// Without it a self-signed certificate is generated at start-up.
    #[arg(long, env = "SLUICE_DEFAULT_SSL_CERTIFICATE", value_name = "NAMESPACE/NAME", value_parser = parse_object_ref)]
    default_ssl_certificate: Option<ObjectRef>,
    /// A client connection with no request in flight for this long is closed (gracefully:
    /// HTTP/2 gets a GOAWAY), so idle HTTP/2 connections do not pile up. Traffic and admin
    /// listeners.
    #[arg(long, env = "SLUICE_CLIENT_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    client_idle_timeout: Duration,
    /// TLS handshakes in progress at once per traffic thread; more connections are closed
    /// at once (counted as `overloaded`).
    #[arg(
        long,
        env = "SLUICE_MAX_TLS_HANDSHAKES",
        value_name = "COUNT",
        default_value_t = 1024
    )]
    max_tls_handshakes: usize,
    /// Time a client gets to complete the TLS handshake.
    #[arg(long, env = "SLUICE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    tls_handshake_timeout: Duration,
    /// The port HTTP→HTTPS redirects point at: the one clients reach the HTTPS listener
    /// on (443 is left out of the URL).
    #[arg(
        long,
        env = "SLUICE_HTTPS_REDIRECT_PORT",
        value_name = "PORT",
        default_value_t = 443
    )]
    https_redirect_port: u16,
    /// Address of the admin listener: /metrics, /healthz, /readyz. Loopback by default, so
    /// only the host (or pod) itself reaches it; for kubelet probes and Prometheus bind the
    /// pod's address or 0.0.0.0, as the Helm chart does.
    #[arg(
        long,
        env = "SLUICE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    admin_addr: SocketAddr,
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
    admin_max_connections: u32,
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
    max_connections: Option<u32>,
    /// The memory limit the watermarks apply to, in bytes (suffixes Ki, Mi, Gi): above
    /// 80 % Sluice stops offering keep-alive and closes idle connections sooner, above 90 %
    /// it closes idle connections oldest first. Default: the cgroup's memory limit; none,
    /// no watermarks.
    #[arg(long, env = "SLUICE_MEMORY_LIMIT", value_name = "BYTES", value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    /// A file holding the bearer token of `POST /cache/purge` on the admin listener (mount
    /// it from a Secret); without one the purge endpoint is off.
    #[arg(long, env = "SLUICE_CACHE_PURGE_TOKEN_FILE", value_name = "PATH")]
    cache_purge_token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    class: ClassArgs,
    /// Log format.
    #[arg(
        long,
        env = "SLUICE_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log one line per request (target `sluice::access`).
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    access_log: bool,
    /// Networks whose X-Forwarded-* headers are believed, comma-separated CIDRs.
    #[arg(
        long,
        env = "SLUICE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    trusted_proxies: Vec<IpNet>,
    /// Add `Via: <version> <NAME>` to requests and responses.
    #[arg(long, env = "SLUICE_VIA", value_name = "NAME")]
    via: Option<String>,
    /// Time allowed to connect to an upstream endpoint.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Time allowed for an upstream to send its response headers, counted from the end of
    /// the request body: the time a client takes to upload does not count.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    request_timeout: Duration,
    /// How long a client may keep Sluice waiting for the next bytes of a request body; then
    /// the request is answered 408, and the endpoint is not blamed.
    #[arg(long, env = "SLUICE_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    client_body_timeout: Duration,
    /// How long idle upstream connections are kept for reuse.
    #[arg(long, env = "SLUICE_UPSTREAM_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    upstream_idle_timeout: Duration,
    /// Time a client gets to send a request's headers, and to begin its first request on a
    /// new connection (a connection that sends nothing, or part of the HTTP/2 preface, is
    /// closed after it); also how long an idle keep-alive connection stays open, and how
    /// long a connection closed for being idle gets to let go before it is dropped. Traffic
    /// and admin listeners.
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    header_read_timeout: Duration,
    /// Largest request body in bytes; larger requests get 413.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BODY", value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_request_body: u64,
    /// Largest request header block in bytes; larger requests get 431.
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES", value_name = "BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Most header fields in one request; more get 431.
    #[arg(
        long,
        env = "SLUICE_MAX_HEADERS",
        value_name = "COUNT",
        default_value_t = 100
    )]
    max_headers: usize,
    /// Extra attempts on other endpoints after a connection failure (idempotent requests
    /// without a body).
    #[arg(
        long,
        env = "SLUICE_RETRIES",
        value_name = "COUNT",
        default_value_t = 2
    )]
    retries: u32,
    /// Consecutive failures that eject an endpoint.
    #[arg(
        long,
        env = "SLUICE_EJECT_AFTER",
        value_name = "COUNT",
        default_value_t = 5
    )]
    eject_after: u32,
    /// How long an ejected endpoint is left out before it is tried again.
    #[arg(long, env = "SLUICE_EJECT_FOR", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    eject_for: Duration,
    /// After SIGTERM, keep accepting and serving new requests this long, with /readyz
    /// answering 503, so load balancers and kube-proxy stop sending before the listeners
    /// close. Then in-flight requests get --drain-timeout.
    #[arg(long, env = "SLUICE_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    shutdown_delay: Duration,
    /// How long in-flight requests get to finish on SIGTERM; connections still open then
    /// (an HTTP/2 client that ignores the GOAWAY) are dropped.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
    /// Threads serving traffic, each with its own socket and upstream pool [default: one
    /// per CPU]. The controller runs on two more.
    #[arg(long, env = "SLUICE_WORKER_THREADS", value_name = "COUNT")]
    worker_threads: Option<usize>,
    /// How long to gather changes before compiling.
    #[arg(long, env = "SLUICE_DEBOUNCE", default_value = "50ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    debounce: Duration,
    /// Redis for RateLimit policies with `backend: redis`, token revocation and API keys in
    /// Redis, and the shared layer of Cache policies (redis://, or rediss:// for TLS; user
    /// and password in the URL).
    #[arg(
        long,
        env = "SLUICE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    redis_url: Option<String>,
    /// Longest wait for Redis on one request before a policy's onBackendFailure applies.
    #[arg(long, env = "SLUICE_REDIS_TIMEOUT", default_value = "50ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    redis_timeout: Duration,
    /// Most keys one RateLimit policy remembers per replica; bounds memory under a flood of
    /// distinct keys.
    #[arg(
        long,
        env = "SLUICE_RATE_LIMIT_KEYS",
        default_value_t = 100_000,
        value_name = "COUNT"
    )]
    rate_limit_keys: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Check(args) => check(&args),
        Command::Crds => print_crds(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the kernel from backing Sluice's heap with transparent huge pages. mimalloc asks
/// for them on its arenas, and khugepaged then fills whole 2 MiB regions around the pages
/// that parked connections freed: idle memory grows back, counted against the memory
/// limit, where there is no traffic at all.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "cannot turn transparent huge pages off");
    }
}

/// Returns the calling thread's free mimalloc pages to the system. mimalloc keeps the
/// pages a thread freed until that thread allocates again; a traffic thread whose
/// connections just parked may not for a long time.
fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and only walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
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

fn compile_options(class: &ClassArgs) -> CompileOptions {
    CompileOptions {
        ingress_class: class.ingress_class.clone(),
        ..CompileOptions::default()
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if !args.manifests.is_dir() {
        bail!("{} is not a folder", args.manifests.display());
    }
    let loaded = ManifestFolder::new(&args.manifests).load();
    let compiled = sluice_controller::compile::compile(
        &loaded.objects,
        &Default::default(),
        &compile_options(&args.class),
    );
    let mut errors = 0usize;
    for problem in &loaded.problems {
        println!("{problem}");
    }
    errors += usize::from(loaded.has_errors);
    for (key, object_errors) in &compiled.statuses {
        for error in object_errors {
            let notice = error.severity() == Severity::Notice;
            let level = if notice { "note" } else { "error" };
            errors += usize::from(!notice);
            println!("{level}: {key}: {error}");
        }
    }
    println!(
        "{} Ingresses of class {:?} accepted, {} errors",
        compiled.accepted_ingresses.len(),
        args.class.ingress_class,
        errors
    );
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn init_logging(format: LogFormat) {
    // kube's client logs every failed request as an error; during an API outage that is a
    // line per retry. The watches report the outage once themselves, so by default that
    // target is off; RUST_LOG, when set, decides alone.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    disable_transparent_huge_pages();
    // Traffic gets its own threads (see `TrafficWorkers`); this runtime carries the
    // controller, the admin listener and snapshot delivery, so a long compile never
    // delays a request.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

fn print_crds() -> anyhow::Result<ExitCode> {
    let yaml = sluice_crds::definitions_yaml().context("cannot render the CRDs")?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

/// Traffic threads: the flag, else one per CPU.
fn traffic_threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// Where objects come from.
enum Source {
    Folder(PathBuf),
    Cluster(Box<ClusterSource>),
}

struct ClusterSource {
    client: kube::Client,
    config: ClusterConfig,
    lease: Option<LeaseConfig>,
}

async fn source(args: &RunArgs) -> anyhow::Result<Source> {
    if let Some(manifests) = &args.manifests {
        if !manifests.is_dir() {
            bail!("--manifests {}: not a folder", manifests.display());
        }
        return Ok(Source::Folder(manifests.clone()));
    }
    let publish = args.cluster.publish_target()?;
    let mut config = kube::Config::infer().await.context(
        "cannot reach the Kubernetes API: no in-cluster service account and no usable \
         KUBECONFIG (for standalone mode, pass --manifests DIR)",
    )?;
    // kube leaves responses without a deadline; a request that hangs would stall a watch's
    // list or a lease renewal forever. Watches end server-side before this (kube asks for
    // 290 s), so only a stuck request meets it.
    config.read_timeout = Some(Duration::from_secs(295));
    config.reset_reader_on_write = true;
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    let identity = args.cluster.identity();
    let lease = args.cluster.leader_elect.then(|| {
        let namespace = args
            .cluster
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        LeaseConfig::with_duration(
            namespace,
            args.cluster.lease_name.clone(),
            identity.clone(),
            args.cluster.lease_duration,
        )
    });
    Ok(Source::Cluster(Box::new(ClusterSource {
        client,
        config: ClusterConfig {
            debounce: args.debounce,
            publish,
            identity,
            endpoint_remap: args.cluster.dev_remap_endpoints,
        },
        lease,
    })))
}

async fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source = source(&args).await?;

    let metrics = Arc::new(Metrics::new());
    let health = HealthConfig {
        failures_to_eject: args.eject_after.max(1),
        eject_for: args.eject_for,
    };
    let mut data_plane =
        DataPlane::new(health, Arc::clone(&metrics)).with_rate_limit_keys(args.rate_limit_keys);
    if let Some(url) = &args.redis_url {
        let mut settings = RedisSettings::new(url.clone());
        settings.timeout = args.redis_timeout;
        // The URL may hold a password: errors name the problem, never the URL.
        let connect = |settings| {
            RedisBackend::connect(settings, metrics.rate_limit_redis_seconds.clone())
                .map_err(|error| anyhow::anyhow!("--redis-url is not usable: {error}"))
        };
        let cache_redis = connect(RedisSettings {
            role: RedisRole::Cache,
            ..settings.clone()
        })?;
        data_plane = data_plane
            .with_redis(Arc::new(connect(settings)?))
            .with_cache_redis(Arc::new(cache_redis));
    }
    let data_plane = Arc::new(data_plane);
    data_plane.follow_cache_purges();
    let memory_limit = args.memory_limit.or_else(memory::cgroup_memory_limit);
    let listener_config = ListenerConfig {
        header_read_timeout: args.header_read_timeout,
        max_header_bytes: args.max_header_bytes,
        max_headers: args.max_headers,
        drain_timeout: args.drain_timeout,
        max_handshakes: args.max_tls_handshakes,
        idle_timeout: args.client_idle_timeout,
        max_connections: args.max_connections.map_or_else(
            || memory::default_max_connections(memory_limit, memory::open_files_limit()),
            |max| usize::try_from(max).unwrap_or(usize::MAX),
        ),
        memory_limit,
        release_free_memory: Some(release_free_memory),
    };
    tracing::info!(
        max_connections = listener_config.max_connections,
        memory_limit = ?listener_config.memory_limit,
        "connection budget"
    );
    let admin_options = AdminOptions {
        listener: listener_config.clone(),
        max_connections: usize::try_from(args.admin_max_connections).unwrap_or(usize::MAX),
        purge_token: match &args.cache_purge_token_file {
            None => None,
            Some(path) => {
                let token = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read --cache-purge-token-file {}", path.display())
                })?;
                let token = token.trim();
                anyhow::ensure!(
                    token.len() >= 16,
                    "--cache-purge-token-file {} holds a token shorter than 16 characters",
                    path.display()
                );
                Some(Arc::from(token))
            }
        },
    };
    let proxy_config = ProxyConfig {
        connect_timeout: args.connect_timeout,
        request_timeout: args.request_timeout,
        client_body_timeout: args.client_body_timeout,
        upstream_idle_timeout: args.upstream_idle_timeout,
        max_request_body: args.max_request_body,
        retries: args.retries,
        health,
        trusted_proxies: TrustedProxies::new(args.trusted_proxies.clone()),
        via: args.via.clone(),
        access_log: args.access_log,
        https_redirect_port: args.https_addr.map(|_| args.https_redirect_port),
        ..ProxyConfig::default()
    };
    let threads = traffic_threads(args.worker_threads);
    let traffic = bind_shared(args.http_addr, threads)
        .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
    let traffic_addr = traffic
        .first()
        .and_then(|listener| listener.local_addr().ok())
        .unwrap_or(args.http_addr);
    let mut https_sockets = match args.https_addr {
        Some(addr) => bind_shared(addr, threads)
            .with_context(|| format!("cannot listen on --https-addr {addr}"))?
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    let https_addr = https_sockets
        .first()
        .and_then(|socket: &Option<std::net::TcpListener>| socket.as_ref()?.local_addr().ok());
    let tls = match args.https_addr {
        Some(_) => {
            let fallback = ServerCertificate::self_signed_fallback()
                .context("cannot make the fallback certificate")?;
            let acceptor = TlsAcceptor::new(
                Arc::clone(&data_plane),
                &fallback,
                args.tls_handshake_timeout,
            )
            .context("cannot set up TLS")?;
            Some(Arc::new(acceptor))
        }
        None => None,
    };
    https_sockets.resize_with(traffic.len(), || None);
    let sockets: Vec<WorkerSockets> = traffic
        .into_iter()
        .zip(https_sockets)
        .map(|(http, https)| WorkerSockets { http, https })
        .collect();
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
    let source_name = match &source {
        Source::Folder(manifests) => manifests.display().to_string(),
        Source::Cluster(_) => "kubernetes".to_owned(),
    };
    tracing::info!(
        http = %traffic_addr,
        https = https_addr.map(|addr| addr.to_string()),
        traffic_threads = sockets.len(),
        admin = %admin.local_addr().unwrap_or(args.admin_addr),
        source = %source_name,
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );

    let mut options = compile_options(&args.class);
    options.redis_configured = args.redis_url.is_some();
    options.default_certificate = args.default_ssl_certificate.clone();
    let (publisher, updates) = Publisher::new(options);
    let publisher = publisher.record_compile_seconds(metrics.controller.compile_seconds.clone());
    tokio::spawn(follow_snapshots(Arc::clone(&data_plane), updates));
    let (stop_election_tx, stop_election_rx) = oneshot::channel::<()>();
    let mut election = None;
    // Without an election this replica always leads; the sender lives until shutdown.
    let mut always_leading = None;
    let mut controller = match source {
        Source::Folder(manifests) => tokio::spawn(run_folder(
            ManifestFolder::new(manifests),
            publisher,
            args.debounce,
        )),
        Source::Cluster(cluster) => {
            let ClusterSource {
                client,
                config,
                lease,
            } = *cluster;
            let (leading_tx, leading) = watch::channel(lease.is_none());
            if lease.is_none() {
                metrics.controller.leader.set(1);
            }
            if let Some(lease) = lease {
                election = Some(tokio::spawn(run_election(
                    client.clone(),
                    lease,
                    leading_tx,
                    Arc::clone(&metrics),
                    async move {
                        let _ = stop_election_rx.await;
                    },
                )));
            } else {
                always_leading = Some(leading_tx);
            }
            tokio::spawn(run_cluster(
                client,
                publisher,
                config,
                leading,
                Arc::clone(&metrics),
            ))
        }
    };

    let workers = TrafficWorkers::start(
        sockets,
        tls.as_ref(),
        &data_plane,
        &proxy_config,
        &listener_config,
    )
    .context("cannot start the traffic threads")?;
    // The admin listener outlives the drain, so probes see /readyz turn 503 while
    // in-flight requests finish; it stops with the process.
    let admin_task = tokio::spawn(serve_admin(
        admin,
        Arc::clone(&data_plane),
        admin_options,
        std::future::pending(),
    ));

    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            Ok(ExitCode::SUCCESS)
        }
        ended = &mut controller => match ended {
            Ok(Ok(())) => Ok(ExitCode::SUCCESS),
            Ok(Err(error)) => Err(anyhow::Error::new(error).context("the controller stopped")),
            Err(error) => Err(anyhow::Error::new(error).context("the controller task failed")),
        },
    };
    // Report not ready first, so load balancers stop sending while requests drain.
    data_plane.begin_drain();
    // Hand the lease over now, not after the drain: the pod may be killed before the drain
    // ends, and the next leader should not wait for the lease to expire.
    let _ = stop_election_tx.send(());
    // Endpoint removal reaches load balancers some time after the SIGTERM: serve what still
    // arrives meanwhile instead of refusing connections.
    if !args.shutdown_delay.is_zero() {
        tracing::info!(delay = ?args.shutdown_delay, "not ready; still serving until the shutdown delay ends");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    workers.shutdown().await;
    controller.abort();
    if let Some(election) = election {
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
    drop(always_leading);
    admin_task.abort();
    outcome
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
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
