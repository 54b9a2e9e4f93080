//! A client connection's byte stream as the HTTP servers see it.
//!
//! Bytes read ahead (the protocol sniff, or what hyper had buffered when it let go of an
//! idle connection) are served first, and whether the last write had to wait is kept
//! where the connection's driver can see it: an idle HTTP/1.1 connection is only taken
//! back from hyper once everything hyper wrote has left.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::budget::Activity;

/// A client stream the listener can park: wait, holding nothing but the socket, until
/// the client sends something.
pub(crate) trait ClientStream:
    AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static
{
    /// Whether the stream can say when it is readable, and so park.
    const PARKS: bool;
    /// Whether it may park before its first request. Not over TLS: the client's first
    /// request often arrives with its last handshake message, and is then already
    /// decrypted in rustls, where the socket's readiness cannot see it.
    const PARKS_BEFORE_FIRST_REQUEST: bool;

    /// Ready once reading would not wait (bytes, end of stream or an error); for a stream
    /// that cannot park, at once.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The bare socket, taken off tokio, for the parking lot: `Err(self)` for a stream
    /// with state beyond its socket (TLS). The inner error means the socket is gone.
    fn into_socket(self) -> Result<io::Result<std::net::TcpStream>, Self>
    where
        Self: Sized,
    {
        Err(self)
    }

    /// The stream again, from the socket [`ClientStream::into_socket`] gave.
    fn from_socket(socket: std::net::TcpStream) -> io::Result<Self>
    where
        Self: Sized,
    {
        drop(socket);
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl ClientStream for TcpStream {
    const PARKS: bool = true;
    const PARKS_BEFORE_FIRST_REQUEST: bool = true;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        peek_ready(self, cx)
    }

    fn into_socket(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }

    fn from_socket(socket: std::net::TcpStream) -> io::Result<Self> {
        TcpStream::from_std(socket)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    // Between requests hyper has read until the stream would wait, so rustls holds no
    // plaintext then.
    const PARKS: bool = true;
    const PARKS_BEFORE_FIRST_REQUEST: bool = false;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper reads until the stream would wait, so no plaintext is left in rustls
        // when the connection parks; the next record arrives on the socket.
        peek_ready(self.get_ref().0, cx)
    }
}

/// Ready once the socket has bytes or has ended. A peek, not `poll_read_ready`: tokio
/// counts a newly accepted socket readable until a read would block, so a connection that
/// has sent nothing would never park.
fn peek_ready(stream: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    stream.poll_peek(cx, &mut buf).map_ok(|_| ())
}

/// In-memory connections for tests: never parked.
impl ClientStream for tokio::io::DuplexStream {
    const PARKS: bool = false;
    const PARKS_BEFORE_FIRST_REQUEST: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The stream hyper reads from and writes to.
pub(crate) struct ClientIo<IO> {
    /// Boxed: rarely there, and this struct is in every parked connection.
    read_ahead: Option<Box<Bytes>>,
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: ClientStream> ClientIo<IO> {
    pub(crate) fn new(inner: IO, activity: Arc<Activity>) -> Self {
        ClientIo {
            read_ahead: None,
            inner,
            activity,
        }
    }

    /// Puts `bytes` back in front of whatever is still to be read.
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.read_ahead = Some(Box::new(match self.read_ahead.take() {
            None => bytes,
            Some(ahead) => {
                let mut joined = BytesMut::with_capacity(bytes.len() + ahead.len());
                joined.extend_from_slice(&bytes);
                joined.extend_from_slice(&ahead);
                joined.freeze()
            }
        }));
    }

    /// The activity of the connection this stream belongs to.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The bare socket and the activity, for the parking lot; `Err(self)` when the stream
    /// is more than a socket, or bytes were read ahead.
    pub(crate) fn into_socket(
        self,
    ) -> Result<(io::Result<std::net::TcpStream>, Arc<Activity>), Self> {
        if self.has_read_ahead() {
            return Err(self);
        }
        let ClientIo {
            read_ahead,
            inner,
            activity,
        } = self;
        match inner.into_socket() {
            Ok(socket) => Ok((socket, activity)),
            Err(inner) => Err(ClientIo {
                read_ahead,
                inner,
                activity,
            }),
        }
    }

    /// Whether bytes are waiting to be read that the socket no longer has.
    pub(crate) fn has_read_ahead(&self) -> bool {
        self.read_ahead.is_some()
    }

    /// Ready once the client has sent something (or closed, or failed).
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_read_ahead() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }

    fn note_write<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.activity
            .write_waiting
            .store(poll.is_pending(), Ordering::Relaxed);
        poll
    }
}

impl<IO: ClientStream> AsyncRead for ClientIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(ahead) = self.read_ahead.as_mut() {
            let take = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead[..take]);
            ahead.advance(take);
            if ahead.is_empty() {
                // An empty `Bytes` still holds its buffer.
                self.read_ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: ClientStream> AsyncWrite for ClientIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn unread_bytes_come_first_in_the_order_they_were_sent() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = ClientIo::new(server, Arc::new(Activity::new()));
        client.write_all(b" world").await.unwrap();
        io.unread(Bytes::from_static(b"lo"));
        io.unread(Bytes::from_static(b"hel"));
        let mut read = vec![0u8; 11];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"hello world");
        assert!(!io.has_read_ahead());
    }
}
