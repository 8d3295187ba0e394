//! An MLLP client connection: send a message, read the reply frame (outbound delivery, the test
//! kit and the benchmark).

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tsunagi_hl7v2::mllp::{FrameDecoder, FrameError, frame};

/// Why no reply was read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or was closed before a reply.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection without replying.
    #[error("the peer closed the connection without a reply")]
    Closed,
    /// The reply was not a valid frame.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// One MLLP connection.
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    stream: S,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
}

impl Connection<TcpStream> {
    /// Connects over TCP.
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Speaks MLLP over an established stream.
    pub fn over(stream: S) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(16 * 1024 * 1024),
            buffer: vec![0; 16 * 1024],
        }
    }

    /// Writes raw bytes (tests use this for broken framing).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends one message framed.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ClientError> {
        self.write_raw(&frame(message)).await
    }

    /// Reads the next reply frame.
    pub async fn reply(&mut self, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(content) = self.decoder.next_frame()? {
                return Ok(content);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buffer))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??;
            if read == 0 {
                return Err(ClientError::Closed);
            }
            self.decoder.push(&self.buffer[..read]);
        }
    }

    /// Sends a message and reads its reply, each within `timeout` (a peer that stops reading
    /// cannot hold the sender). After an error the connection is no longer fit for use.
    pub async fn request(
        &mut self,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        tokio::time::timeout(timeout, self.send(message))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        self.reply(timeout).await
    }
}
