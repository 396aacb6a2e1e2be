use std::path::PathBuf;

/// Everything that can go wrong while writing telemetry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Creating, writing or flushing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create event file", "write", …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising a protobuf message failed.
    #[error("encode {what}: {source}")]
    Encode {
        /// Which message.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: protobuf::ProtobufError,
    },
    /// PNG encoding failed.
    #[error("encode PNG {width}x{height}: {message}")]
    Png {
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
        /// The encoder's message.
        message: String,
    },
    /// An RGB buffer, activity matrix or histogram does not have the size its dimensions say.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Length implied by the given dimensions.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// An input value that is not accepted (empty tag, zero-sized image, …).
    #[error("{0}")]
    Invalid(String),
}
