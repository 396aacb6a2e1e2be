//! TFRecord framing: `len u64 | masked_crc(len) u32 | data | masked_crc(data) u32`, little endian.

use std::io::Write;

/// TensorFlow's masked CRC-32C, so a reader can tell a torn record from a good one.
pub(crate) fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames one record; returns the bytes so the caller writes them with a single `write_all`.
pub(crate) fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Writes one framed record.
pub(crate) fn write_record(w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorboard_rs_table_implementation() {
        for data in [
            &b""[..],
            b"a",
            b"brain.Event:2",
            &[0u8, 1, 2, 255, 7, 9][..],
        ] {
            assert_eq!(
                masked_crc32c(data),
                tensorboard_rs::masked_crc32c::masked_crc32c(data)
            );
        }
    }

    #[test]
    fn frame_has_length_header_and_both_crcs() {
        let f = frame(b"xyz");
        assert_eq!(f.len(), 3 + 16);
        assert_eq!(u64::from_le_bytes(f[..8].try_into().unwrap()), 3);
        assert_eq!(&f[12..15], b"xyz");
        assert_eq!(
            u32::from_le_bytes(f[15..].try_into().unwrap()),
            masked_crc32c(b"xyz")
        );
    }
}
