//! The downstream side of a terminated TLS connection: tokio-rustls' server stream over a TCP
//! socket, with reads that ask the socket for readiness before running rustls' read path.
//!
//! Owns no TLS policy (that is `ServerTls`); imports only tokio, tokio-rustls and rustls.

use rustls::ServerConnection;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A server-side TLS stream after its handshake.
pub struct ServerStream {
    inner: TlsStream<TcpStream>,
}

impl ServerStream {
    pub fn new(inner: TlsStream<TcpStream>) -> Self {
        ServerStream { inner }
    }

    /// The rustls connection (peer certificates, negotiated parameters).
    pub fn connection(&self) -> &ServerConnection {
        self.inner.get_ref().1
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (tcp, conn) = this.inner.get_ref();
        // NOTE: hyper polls an HTTP/1.1 connection's read side about five times per request,
        // and all but one find nothing. tokio-rustls answers each of them by running rustls'
        // read path (take a deframer buffer, read the socket, which is not ready, give the
        // buffer back): ~500 instructions each. When rustls holds no plaintext, nothing can
        // be read until the socket is readable, so ask the socket first (its cached
        // readiness; no syscall), registering the same waker the socket read would. A stale
        // readiness, EOF or a socket error falls through to the full read, which reports it.
        // rustls decrypts every complete record it reads at once (`process_new_packets`), so
        // with no plaintext buffered any record still in its buffer is partial and waits for
        // the socket too.
        if conn.wants_read() && tcp.poll_read_ready(cx).is_pending() {
            return Poll::Pending;
        }
        let mut inner = Pin::new(&mut this.inner);
        let data = ready!(inner.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        inner.as_mut().consume(n);
        // NOTE: tokio-rustls' own `poll_read` then keeps reading the socket until `buf` is full
        // or the socket would block: one more trip through rustls' read path per request, to
        // find the socket empty. Only plaintext rustls already holds is taken here; whatever
        // the socket has left is read on the next poll (its readiness is still set).
        while buf.remaining() > 0 && !inner.get_ref().1.wants_read() {
            match inner.as_mut().poll_fill_buf(cx) {
                Poll::Ready(Ok(data)) if !data.is_empty() => {
                    let n = data.len().min(buf.remaining());
                    buf.put_slice(&data[..n]);
                    inner.as_mut().consume(n);
                }
                _ => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
