//! `sluice run`: builds the data plane and the controller from the flags, serves until a
//! signal (or the controller's end), then shuts down in order ([`Shutdown`]).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_controller::cluster::{ClusterConfig, run_cluster};
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
use sluice_dataplane::snapshot::ServerCertificate;
use sluice_dataplane::tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::{LogFormat, RunArgs, compile_options};

/// What the binary brings that the library cannot know: how to hand freed memory back
/// to the system, which depends on the allocator the binary chose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Process {
    pub release_free_memory: Option<fn()>,
}

/// Runs the controller and the data plane until a signal, then shuts down.
pub fn run(args: RunArgs, process: Process) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    // Traffic gets its own threads (see `TrafficWorkers`); this runtime carries the
    // controller, the admin listener and snapshot delivery, so a long compile never
    // delays a request.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, process))
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

/// Traffic threads: the flag, else one per CPU.
fn traffic_threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// Where objects come from.
enum Source {
    Folder(std::path::PathBuf),
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

async fn serve(args: RunArgs, process: Process) -> anyhow::Result<ExitCode> {
    let source = source(&args).await?;
    let metrics = Arc::new(Metrics::new());
    let health = HealthConfig {
        failures_to_eject: args.eject_after.max(1),
        eject_for: args.eject_for,
    };
    let data_plane = Arc::new(data_plane(&args, health, &metrics)?);
    data_plane.follow_cache_purges();
    let listener_config = listener_config(&args, process);
    let admin_options = admin_options(&args, &listener_config)?;
    let proxy_config = proxy_config(&args, health);
    let listeners = Listeners::bind(&args, &data_plane).await?;
    listeners.log(&args, &source);
    let controller = Controller::start(source, &args, &metrics, &data_plane);
    let workers = TrafficWorkers::start(
        listeners.traffic,
        listeners.tls.as_ref(),
        &data_plane,
        &proxy_config,
        &listener_config,
    )
    .context("cannot start the traffic threads")?;
    // The admin listener outlives the drain, so probes see /readyz turn 503 while
    // in-flight requests finish; it stops with the process.
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        Arc::clone(&data_plane),
        admin_options,
        std::future::pending(),
    ));
    let Controller {
        mut task,
        election,
        stop_election,
        always_leading,
    } = controller;
    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            Ok(ExitCode::SUCCESS)
        }
        ended = &mut task => match ended {
            Ok(Ok(())) => Ok(ExitCode::SUCCESS),
            Ok(Err(error)) => Err(anyhow::Error::new(error).context("the controller stopped")),
            Err(error) => Err(anyhow::Error::new(error).context("the controller task failed")),
        },
    };
    Shutdown {
        data_plane,
        stop_election,
        delay: args.shutdown_delay,
        workers,
        controller: task,
        election,
        admin,
    }
    .run()
    .await;
    drop(always_leading);
    outcome
}

/// The data plane, with its Redis connections when `--redis-url` is set.
fn data_plane(
    args: &RunArgs,
    health: HealthConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<DataPlane> {
    let mut data_plane =
        DataPlane::new(health, Arc::clone(metrics)).with_rate_limit_keys(args.rate_limit_keys);
    let Some(url) = &args.redis_url else {
        return Ok(data_plane);
    };
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
    Ok(data_plane)
}

fn listener_config(args: &RunArgs, process: Process) -> ListenerConfig {
    let memory_limit = args.memory_limit.or_else(memory::cgroup_memory_limit);
    let config = ListenerConfig {
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
        release_free_memory: process.release_free_memory,
    };
    tracing::info!(
        max_connections = config.max_connections,
        memory_limit = ?config.memory_limit,
        "connection budget"
    );
    config
}

fn admin_options(args: &RunArgs, listener: &ListenerConfig) -> anyhow::Result<AdminOptions> {
    let purge_token = match &args.cache_purge_token_file {
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
    };
    Ok(AdminOptions {
        listener: listener.clone(),
        max_connections: usize::try_from(args.admin_max_connections).unwrap_or(usize::MAX),
        purge_token,
    })
}

fn proxy_config(args: &RunArgs, health: HealthConfig) -> ProxyConfig {
    ProxyConfig {
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
    }
}

/// The listening sockets, bound before anything starts so that a taken port fails the
/// start: per traffic thread an HTTP socket and maybe an HTTPS one, and the admin one.
struct Listeners {
    traffic: Vec<WorkerSockets>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    tls: Option<Arc<TlsAcceptor>>,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(args: &RunArgs, data_plane: &Arc<DataPlane>) -> anyhow::Result<Self> {
        let threads = traffic_threads(args.worker_threads);
        let http = bind_shared(args.http_addr, threads)
            .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
        let http_addr = http
            .first()
            .and_then(|listener| listener.local_addr().ok())
            .unwrap_or(args.http_addr);
        let mut https: Vec<Option<std::net::TcpListener>> = match args.https_addr {
            Some(addr) => bind_shared(addr, threads)
                .with_context(|| format!("cannot listen on --https-addr {addr}"))?
                .into_iter()
                .map(Some)
                .collect(),
            None => Vec::new(),
        };
        let https_addr = https
            .first()
            .and_then(|socket| socket.as_ref()?.local_addr().ok());
        let tls = match args.https_addr {
            Some(_) => {
                let fallback = ServerCertificate::self_signed_fallback()
                    .context("cannot make the fallback certificate")?;
                let acceptor = TlsAcceptor::new(
                    Arc::clone(data_plane),
                    &fallback,
                    args.tls_handshake_timeout,
                )
                .context("cannot set up TLS")?;
                Some(Arc::new(acceptor))
            }
            None => None,
        };
        https.resize_with(http.len(), || None);
        let traffic = http
            .into_iter()
            .zip(https)
            .map(|(http, https)| WorkerSockets { http, https })
            .collect();
        let admin = TcpListener::bind(args.admin_addr)
            .await
            .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
        Ok(Listeners {
            traffic,
            http_addr,
            https_addr,
            tls,
            admin,
        })
    }

    fn log(&self, args: &RunArgs, source: &Source) {
        let source = match source {
            Source::Folder(manifests) => manifests.display().to_string(),
            Source::Cluster(_) => "kubernetes".to_owned(),
        };
        tracing::info!(
            http = %self.http_addr,
            https = self.https_addr.map(|addr| addr.to_string()),
            traffic_threads = self.traffic.len(),
            admin = %self.admin.local_addr().unwrap_or(args.admin_addr),
            source = %source,
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
    }
}

/// The controller's tasks: the source's (folder or cluster) and, with a lease, the
/// election's.
struct Controller {
    task: JoinHandle<Result<(), sluice_controller::error::ControllerError>>,
    election: Option<JoinHandle<()>>,
    /// Tells the election to hand the lease over.
    stop_election: oneshot::Sender<()>,
    /// Without an election this replica always leads; the sender lives until shutdown.
    always_leading: Option<watch::Sender<bool>>,
}

impl Controller {
    fn start(
        source: Source,
        args: &RunArgs,
        metrics: &Arc<Metrics>,
        data_plane: &Arc<DataPlane>,
    ) -> Self {
        let mut options = compile_options(&args.class);
        options.redis_configured = args.redis_url.is_some();
        options.default_certificate = args.default_ssl_certificate.clone();
        let (publisher, updates) = Publisher::new(options);
        let publisher =
            publisher.record_compile_seconds(metrics.controller.compile_seconds.clone());
        tokio::spawn(follow_snapshots(Arc::clone(data_plane), updates));
        let (stop_election, stop_election_rx) = oneshot::channel::<()>();
        let cluster = match source {
            Source::Folder(manifests) => {
                let folder = ManifestFolder::new(manifests);
                return Controller {
                    task: tokio::spawn(run_folder(folder, publisher, args.debounce)),
                    election: None,
                    stop_election,
                    always_leading: None,
                };
            }
            Source::Cluster(cluster) => *cluster,
        };
        let ClusterSource {
            client,
            config,
            lease,
        } = cluster;
        let (leading_tx, leading) = watch::channel(lease.is_none());
        let (election, always_leading) = match lease {
            Some(lease) => {
                let stopped = async move {
                    let _ = stop_election_rx.await;
                };
                let metrics = Arc::clone(metrics);
                let election = run_election(client.clone(), lease, leading_tx, metrics, stopped);
                (Some(tokio::spawn(election)), None)
            }
            None => {
                metrics.controller.leader.set(1);
                (None, Some(leading_tx))
            }
        };
        let metrics = Arc::clone(metrics);
        Controller {
            task: tokio::spawn(run_cluster(client, publisher, config, leading, metrics)),
            election,
            stop_election,
            always_leading,
        }
    }
}

/// The shutdown sequence, in its order: report not ready, hand the lease over, keep
/// serving for the shutdown delay, drain the traffic listeners, stop the controller,
/// let the election finish its hand-over, stop the admin listener.
pub(crate) struct Shutdown {
    pub data_plane: Arc<DataPlane>,
    pub stop_election: oneshot::Sender<()>,
    /// `--shutdown-delay`.
    pub delay: Duration,
    pub workers: TrafficWorkers,
    pub controller: JoinHandle<Result<(), sluice_controller::error::ControllerError>>,
    pub election: Option<JoinHandle<()>>,
    pub admin: JoinHandle<()>,
}

impl Shutdown {
    pub(crate) async fn run(self) {
        // Report not ready first, so load balancers stop sending while requests drain.
        self.data_plane.begin_drain();
        // Hand the lease over now, not after the drain: the pod may be killed before the
        // drain ends, and the next leader should not wait for the lease to expire.
        let _ = self.stop_election.send(());
        // Endpoint removal reaches load balancers some time after the SIGTERM: serve what
        // still arrives meanwhile instead of refusing connections.
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "not ready; still serving until the shutdown delay ends");
            tokio::time::sleep(self.delay).await;
        }
        self.workers.shutdown().await;
        self.controller.abort();
        if let Some(election) = self.election {
            let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
        }
        self.admin.abort();
    }
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
    use std::io::{Read, Write};

    use sluice_controller::error::ControllerError;
    use sluice_dataplane::snapshot::Snapshot;

    use super::*;

    /// Whether a request on a new connection to `addr` gets an HTTP answer (with no
    /// routes, Sluice's own 404).
    async fn answers(addr: SocketAddr) -> bool {
        tokio::task::spawn_blocking(move || {
            let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
            let mut head = [0u8; 9];
            stream.write_all(request).is_ok()
                && stream.read_exact(&mut head).is_ok()
                && &head == b"HTTP/1.1 "
        })
        .await
        .unwrap_or(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_turns_not_ready_hands_the_lease_over_serves_through_the_delay_then_stops() {
        let metrics = Arc::new(Metrics::new());
        let data_plane = Arc::new(DataPlane::new(HealthConfig::default(), metrics));
        data_plane.apply(Arc::new(Snapshot::empty(1)));
        assert!(data_plane.is_ready());
        let http = bind_shared("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .pop()
            .unwrap();
        let addr = http.local_addr().unwrap();
        let workers = TrafficWorkers::start(
            vec![WorkerSockets { http, https: None }],
            None,
            &data_plane,
            &ProxyConfig::default(),
            &ListenerConfig::default(),
        )
        .unwrap();
        assert!(answers(addr).await, "serving before the shutdown");
        let (stop_election, mut lease_handed_over) = oneshot::channel();
        let (controller_alive, controller_stopped) = oneshot::channel::<()>();
        let controller = tokio::spawn(async move {
            let _alive = controller_alive;
            std::future::pending::<Result<(), ControllerError>>().await
        });
        let shutdown = Shutdown {
            data_plane: Arc::clone(&data_plane),
            stop_election,
            delay: Duration::from_millis(1500),
            workers,
            controller,
            election: None,
            admin: tokio::spawn(std::future::pending()),
        };
        let sequence = tokio::spawn(shutdown.run());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!data_plane.is_ready(), "not ready once the shutdown begins");
        assert!(
            lease_handed_over.try_recv().is_ok(),
            "the lease is handed over before the delay ends"
        );
        assert!(
            answers(addr).await,
            "still serving during the shutdown delay"
        );
        assert!(!sequence.is_finished(), "the delay is waited out");
        tokio::time::timeout(Duration::from_secs(10), sequence)
            .await
            .expect("the sequence ends")
            .unwrap();
        assert!(
            !answers(addr).await,
            "the traffic listener is closed after the drain"
        );
        let stopped = tokio::time::timeout(Duration::from_secs(5), controller_stopped).await;
        assert!(
            matches!(stopped, Ok(Err(_))),
            "the controller task is stopped"
        );
    }
}
