//! A blocking client for containerd's gRPC API over its unix socket: the connection (shared
//! with the CRI client in `faultline-runtime`, which speaks to the same socket) and the one
//! question the `orphan-shim` detector asks: does containerd know a task with this id?
//!
//! containerd serves its API and CRI on one socket (`[grpc] address`, default
//! `/run/containerd/containerd.sock`). The namespace of a call travels in the gRPC metadata
//! header `containerd-namespace` (containerd's `namespaces.GRPCHeader`).
//! tonic needs an async runtime; a current-thread tokio runtime per client keeps the callers
//! synchronous and adds no threads.
//!
//! A unix socket address holds at most 107 bytes of path (`sun_path` is 108 bytes with its
//! NUL, unix(7)), and a socket reached through `/proc/PID/root/...` easily needs more. Such a
//! path is opened with `O_PATH` and dialled as `/proc/self/fd/N`, which names the same socket
//! inode in a few bytes (open(2) documents `O_PATH` descriptors for exactly this use).

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::GetRequest;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's metadata header naming the namespace of a call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The longest path a unix socket address holds: `sun_path` (108 bytes) less its NUL.
pub const SUN_PATH_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("failed to start an async runtime for gRPC")]
    Runtime(#[source] std::io::Error),
    #[error("failed to open the socket path {socket}")]
    OpenPath {
        socket: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to connect to containerd at {socket} within {limit:?}")]
    ConnectTimeout { socket: PathBuf, limit: Duration },
    #[error("failed to connect to containerd at {socket}")]
    Connect {
        socket: PathBuf,
        /// The system's error when there is one (tonic's transport error repeats its cause in
        /// its own text), else tonic's.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("containerd at {socket} did not answer {call} within {limit:?}")]
    Timeout {
        socket: PathBuf,
        call: &'static str,
        limit: Duration,
    },
    #[error("containerd at {socket} failed {call}: {status}")]
    Call {
        socket: PathBuf,
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

/// A connection to one containerd socket.
pub struct GrpcSocket {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    /// Bound for each call (and for connecting).
    pub limit: Duration,
    /// The `O_PATH` descriptor a long socket path is dialled through, held as long as the
    /// channel may reconnect.
    _path_fd: Option<Arc<OwnedFd>>,
}

/// The OS error under a failed connect (ENOENT, ECONNREFUSED, ...), or the transport error.
fn connect_cause(e: tonic::transport::Error) -> Box<dyn std::error::Error + Send + Sync> {
    let mut next = std::error::Error::source(&e);
    while let Some(cause) = next {
        if let Some(code) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Box::new(std::io::Error::from_raw_os_error(code));
        }
        next = cause.source();
    }
    Box::new(e)
}

/// What to dial for `socket`: the path itself, or `/proc/self/fd/N` of an `O_PATH`
/// descriptor when the path does not fit a socket address.
fn dial_path(socket: &Path) -> Result<(PathBuf, Option<Arc<OwnedFd>>), ContainerdError> {
    if socket.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return Ok((socket.to_path_buf(), None));
    }
    let fd = nix::fcntl::open(
        socket,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| ContainerdError::OpenPath {
        socket: socket.to_path_buf(),
        source,
    })?;
    let dial = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((dial, Some(Arc::new(fd))))
}

impl GrpcSocket {
    /// Connects to the unix socket `socket` (a path as this process sees it; a socket in
    /// another mount namespace can be reached through `/proc/PID/root/...`, of any length),
    /// within `limit`.
    pub fn connect(socket: &Path, limit: Duration) -> Result<GrpcSocket, ContainerdError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ContainerdError::Runtime)?;
        let (path, path_fd) = dial_path(socket)?;
        let held = path_fd.clone();
        // The URI is a placeholder: the connector ignores it and dials the socket.
        let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(limit);
        let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            let _held = held.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        let channel = runtime
            .block_on(async move { tokio::time::timeout(limit, connecting).await })
            .map_err(|_| ContainerdError::ConnectTimeout {
                socket: socket.to_path_buf(),
                limit,
            })?
            .map_err(|e| ContainerdError::Connect {
                socket: socket.to_path_buf(),
                source: connect_cause(e),
            })?;
        Ok(GrpcSocket {
            socket: socket.to_path_buf(),
            runtime,
            channel,
            limit,
            _path_fd: path_fd,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The channel, for other gRPC clients on the same socket (CRI).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs one call to completion, bounded by [`GrpcSocket::limit`].
    pub fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        self.call_within(call, self.limit, fut)
    }

    /// Runs one call to completion, bounded by `limit` (a call that may take longer than
    /// most, as StopPodSandbox does while a shim's unmount hangs).
    pub fn call_within<T>(
        &self,
        call: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        self.runtime
            .block_on(async move { tokio::time::timeout(limit, fut).await })
            .map_err(|_| ContainerdError::Timeout {
                socket: self.socket.clone(),
                call,
                limit,
            })?
            .map_err(|status| ContainerdError::Call {
                socket: self.socket.clone(),
                call,
                status: Box::new(status),
            })
    }

    /// A request carrying containerd's namespace header.
    pub fn request<T>(namespace: &str, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Ok(value) = namespace.parse() {
            req.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        req
    }

    /// Whether containerd knows a task `id` in `namespace` (Tasks.Get; NotFound is `false`).
    pub fn task_exists(&self, namespace: &str, id: &str) -> Result<bool, ContainerdError> {
        let mut tasks = TasksClient::new(self.channel());
        let req = Self::request(
            namespace,
            GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
        );
        match self.call("Tasks.Get", async move { tasks.get(req).await }) {
            Ok(_) => Ok(true),
            Err(ContainerdError::Call { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_it() {
        let dir =
            std::env::temp_dir().join(format!("faultline-no-containerd-{}", std::process::id()));
        let sock = dir.join("containerd.sock");
        let err = match GrpcSocket::connect(&sock, Duration::from_secs(2)) {
            Ok(_) => panic!("connected to a socket that does not exist"),
            Err(e) => e,
        };
        assert!(matches!(err, ContainerdError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("containerd.sock"), "{err}");
        // The cause once, as the system gives it.
        assert_eq!(
            crate::error_chain(&err),
            format!(
                "failed to connect to containerd at {}: No such file or directory (os error 2)",
                sock.display()
            )
        );
    }

    /// A directory whose socket path is longer than a socket address holds.
    fn long_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        dir
    }

    #[test]
    fn a_socket_path_longer_than_sun_path_is_dialled_through_o_path() {
        let dir = long_dir();
        let sock = dir
            .path()
            .join("d".repeat(60))
            .join("e".repeat(60))
            .join("containerd.sock");
        assert!(sock.as_os_str().len() > SUN_PATH_MAX);
        // A listener that accepts connections (the kernel does, into its backlog) and never
        // answers: connecting works, the call runs into its bound. It cannot be bound at the
        // long path either: bound at a short one, then renamed there.
        let short = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&short).unwrap();
        std::fs::rename(&short, &sock).unwrap();
        let limit = Duration::from_millis(300);
        let client = GrpcSocket::connect(&sock, limit).unwrap();
        let start = std::time::Instant::now();
        let err = client.task_exists("k8s.io", "abc").unwrap_err();
        assert!(matches!(err, ContainerdError::Timeout { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("containerd.sock"), "{err}");
    }

    #[test]
    fn a_long_path_that_does_not_exist_is_an_open_error_naming_it() {
        let dir = long_dir();
        let sock = dir
            .path()
            .join("d".repeat(60))
            .join("e".repeat(60))
            .join("gone.sock");
        let err = match GrpcSocket::connect(&sock, Duration::from_secs(2)) {
            Ok(_) => panic!("connected to a socket that does not exist"),
            Err(e) => e,
        };
        assert!(matches!(err, ContainerdError::OpenPath { .. }), "{err}");
        assert!(err.to_string().contains("gone.sock"), "{err}");
    }
}
