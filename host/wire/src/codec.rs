//! Big-endian, length-prefixed fields: the writer and the strict reader
//! shared by envelopes and declarations.

use crate::WireError;

/// Appends fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    pub(crate) fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    /// A string of at most 255 bytes after a one-byte length (the caller
    /// has checked the length).
    pub(crate) fn short(&mut self, text: &str) -> &mut Self {
        self.u8(text.len() as u8).bytes(text.as_bytes())
    }

    /// A string of at most 65,535 bytes after a two-byte length.
    pub(crate) fn medium(&mut self, text: &str) -> &mut Self {
        self.u16(text.len() as u16).bytes(text.as_bytes())
    }

    /// Bytes after a four-byte length.
    pub(crate) fn long(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes(&(bytes.len() as u32).to_be_bytes()).bytes(bytes)
    }
}

/// Reads fields, failing on the first short or malformed one.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::new(format!("truncated {what}")));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn text(bytes: &'a [u8], what: &str) -> Result<&'a str, WireError> {
        std::str::from_utf8(bytes).map_err(|_| WireError::new(format!("{what} is not UTF-8")))
    }

    pub(crate) fn short(&mut self, what: &str) -> Result<&'a str, WireError> {
        let n = self.u8(what)? as usize;
        Self::text(self.take(n, what)?, what)
    }

    pub(crate) fn medium(&mut self, what: &str) -> Result<&'a str, WireError> {
        let n = self.u16(what)? as usize;
        Self::text(self.take(n, what)?, what)
    }

    pub(crate) fn long(&mut self, what: &str) -> Result<&'a [u8], WireError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.rest.is_empty() { Ok(()) } else { Err(WireError::new("trailing bytes")) }
    }
}
