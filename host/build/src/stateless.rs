//! The stateless declaration: a custom section named [`SECTION`] in the
//! component, by which a plugin lets the host serve many of its tasks with
//! one warm instance.
//!
//! A Rust plugin writes the section itself (`anocast_sdk::export!(W,
//! stateless)`); for the other languages the build appends it when the
//! plugin folder's `anocast.toml` says:
//!
//! ```toml
//! stateless = true
//! ```

use std::path::Path;

use crate::BuildError;

/// Name of the custom section that declares a component stateless.
pub const SECTION: &str = "anocast:stateless";

/// The file in a plugin folder holding its build settings.
pub const SETTINGS_FILE: &str = "anocast.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    stateless: bool,
}

/// Whether the plugin in `folder` declares itself stateless in its
/// `anocast.toml` (no file: no).
pub fn declared(folder: &Path) -> Result<bool, BuildError> {
    let path = folder.join(SETTINGS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(BuildError(format!("{}: {e}", path.display()))),
    };
    toml::from_str::<Settings>(&text)
        .map(|s| s.stateless)
        .map_err(|e| BuildError(format!("{}: {}", path.display(), e.message())))
}

/// The bytes of a custom section named [`SECTION`] (holding one byte, 1),
/// to append to a component.
pub fn section() -> Vec<u8> {
    let mut body = Vec::new();
    leb128(&mut body, SECTION.len());
    body.extend_from_slice(SECTION.as_bytes());
    body.push(1);
    let mut bytes = vec![0u8];
    leb128(&mut bytes, body.len());
    bytes.extend(body);
    bytes
}

fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends the declaration to the component at `path`. (Custom sections
/// may come anywhere in a component, the end included.)
pub fn mark_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(&section())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_a_well_formed_custom_section() {
        let bytes = section();
        assert_eq!(bytes[0], 0, "custom section id");
        assert_eq!(bytes[1] as usize, bytes.len() - 2, "size");
        assert_eq!(bytes[2] as usize, SECTION.len());
        assert_eq!(&bytes[3..3 + SECTION.len()], SECTION.as_bytes());
    }

    #[test]
    fn long_values_take_several_leb128_bytes() {
        let mut out = Vec::new();
        leb128(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn the_settings_file_is_read_strictly() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("anocast-stateless-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        assert_eq!(declared(&dir), Ok(false), "no file");
        std::fs::write(dir.join(SETTINGS_FILE), "stateless = true\n")?;
        assert_eq!(declared(&dir), Ok(true));
        std::fs::write(dir.join(SETTINGS_FILE), "stateles = true\n")?;
        let err = declared(&dir).expect_err("a misspelt key is refused");
        std::fs::remove_dir_all(&dir)?;
        assert!(err.0.contains("unknown field"), "{err}");
        Ok(())
    }
}
