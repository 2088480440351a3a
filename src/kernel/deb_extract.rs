//! Pulling the kernel image (`/boot/vmlinuz-<release>` or `/usr/lib/modules/<release>/vmlinuz`)
//! out of a `.deb` (an ar archive holding `data.tar.*`).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What `extract_vmlinuz` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// From the member's path.
    pub release: String,
    /// Whether `boot/config-<release>` was present and written.
    pub config: bool,
}

/// Extracts the kernel image of the `.deb` at `deb` into `dest`, and its config
/// into `config_dest` when the package has one (in the split layout the config
/// lives in another package). Files are written as given;
/// callers pass temp paths and rename.
pub fn extract_vmlinuz(deb: &Path, dest: &Path, config_dest: &Path) -> Result<Extracted> {
    with_data_tar(deb, "the kernel image", |data| {
        extract_from_tar(data, dest, config_dest)
    })
}

/// Runs `f` on the decompressed `data.tar.*` stream of the `.deb` at `deb`
/// (`what` says what is searched for, in errors).
pub fn with_data_tar<T>(
    deb: &Path,
    what: &str,
    f: impl FnOnce(Box<dyn Read + '_>) -> Result<T>,
) -> Result<T> {
    let file = File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let mut ar = ar::Archive::new(BufReader::new(file));
    while let Some(member) = ar.next_entry() {
        let member = member.with_context(|| format!("reading ar archive {}", deb.display()))?;
        let name = String::from_utf8_lossy(member.header().identifier()).to_string();
        if !name.starts_with("data.tar") {
            continue;
        }
        let data = decompressor(&name, member)
            .with_context(|| format!("{}: member {name}", deb.display()))?;
        return f(data).with_context(|| format!("{}: searching {name} for {what}", deb.display()));
    }
    bail!("{} has no data.tar.* member (not a .deb?)", deb.display())
}

/// Copies the package's Debian changelog (`usr/share/doc/<package>/changelog.gz`, or
/// `changelog.Debian.gz` in the split layout's `linux-base-*`) to `dest`. False when
/// the package has none as a regular file (the split layout's image and binary
/// packages only hold a symlink to linux-base's folder).
pub fn extract_changelog(deb: &Path, dest: &Path) -> Result<bool> {
    with_data_tar(deb, "the changelog", |data| {
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.to_string_lossy().to_string();
            if is_changelog(&path) {
                copy_out(&mut entry, dest)?;
                return Ok(true);
            }
        }
        Ok(false)
    })
}

fn is_changelog(path: &str) -> bool {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let Some((_, file)) = p
        .strip_prefix("usr/share/doc/")
        .and_then(|r| r.split_once('/'))
    else {
        return false;
    };
    matches!(file, "changelog.gz" | "changelog.Debian.gz")
}

fn decompressor<'a, R: Read + 'a>(name: &str, r: R) -> Result<Box<dyn Read + 'a>> {
    Ok(match name.trim_end_matches('/') {
        "data.tar" => Box::new(r),
        "data.tar.xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(r)?),
        "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(r)),
        other => bail!("unsupported compression in {other}"),
    })
}

/// Copies the kernel image (and its config, if any) out of a tar stream.
pub fn extract_from_tar<R: Read>(r: R, dest: &Path, config_dest: &Path) -> Result<Extracted> {
    let mut tar = tar::Archive::new(r);
    let mut release = None;
    let mut config = false;
    // The whole stream is read: the config may come after the image.
    for entry in tar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue; // e.g. a /vmlinuz -> boot/vmlinuz-... symlink
        }
        let path = entry.path()?.to_string_lossy().to_string();
        match classify(&path) {
            Some((Member::Image, r)) if release.is_none() => {
                release = Some(r.to_string());
                copy_out(&mut entry, dest)?;
            }
            Some((Member::Config, _)) if !config => {
                copy_out(&mut entry, config_dest)?;
                config = true;
            }
            _ => {}
        }
    }
    match release {
        Some(release) => Ok(Extracted { release, config }),
        None => bail!(
            "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in the package; \
             is it a meta package rather than the one holding the image?"
        ),
    }
}

fn copy_out(r: &mut impl Read, dest: &Path) -> Result<()> {
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    io::copy(r, &mut out).with_context(|| format!("writing {}", dest.display()))?;
    out.flush()?;
    out.sync_all()?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Member {
    Image,
    Config,
}

/// Recognises the image and config in both package layouts, returning the release:
/// classic `boot/vmlinuz-<release>`, and `usr/lib/modules/<release>/vmlinuz`
/// (the `linux-binary-*` packages of forky and newer backports).
fn classify(path: &str) -> Option<(Member, &str)> {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let plain = |r: &&str| !r.is_empty() && !r.contains('/');
    if let Some(name) = p.strip_prefix("boot/") {
        if let Some(r) = name.strip_prefix("vmlinuz-").filter(plain) {
            return Some((Member::Image, r));
        }
        if let Some(r) = name.strip_prefix("config-").filter(plain) {
            return Some((Member::Config, r));
        }
    }
    let (release, file) = p.strip_prefix("usr/lib/modules/")?.split_once('/')?;
    match file {
        "vmlinuz" if !release.is_empty() => Some((Member::Image, release)),
        "config" if !release.is_empty() => Some((Member::Config, release)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_member_names() {
        assert!(is_changelog(
            "./usr/share/doc/linux-image-6.1.0-50-cloud-amd64/changelog.gz"
        ));
        assert!(is_changelog(
            "./usr/share/doc/linux-base-7.3.4+deb13-cloud-amd64/changelog.Debian.gz"
        ));
        assert!(!is_changelog(
            "./usr/share/doc/linux-base-7.3.4+deb13-cloud-amd64/NEWS.Debian.gz"
        ));
        assert!(!is_changelog("./usr/share/doc/changelog.gz"));
    }

    #[test]
    fn release_from_member_name() {
        use Member::*;
        assert_eq!(
            classify("./boot/vmlinuz-6.1.0-56-cloud-amd64"),
            Some((Image, "6.1.0-56-cloud-amd64"))
        );
        assert_eq!(
            classify("./boot/config-6.1.0-56-cloud-amd64"),
            Some((Config, "6.1.0-56-cloud-amd64"))
        );
        assert_eq!(
            classify("./usr/lib/modules/7.2.12+deb14-cloud-amd64/vmlinuz"),
            Some((Image, "7.2.12+deb14-cloud-amd64"))
        );
        assert_eq!(
            classify("./usr/lib/modules/7.2.12+deb14-cloud-amd64/kernel/x.ko"),
            None
        );
        assert_eq!(classify("./boot/System.map-6.1.0-56-cloud-amd64"), None);
        assert_eq!(classify("./usr/share/doc/boot/vmlinuz-x"), None);
    }

    #[test]
    fn extracts_from_a_built_deb() {
        // Build data.tar.xz with a vmlinuz, wrap it in an ar archive, extract it back.
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("./boot/config-1.2.3-test", &b"cfg"[..]),
            ("./boot/vmlinuz-1.2.3-test", &b"KERNEL"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        let data = xz.finish().unwrap();

        let mut deb = ar::Builder::new(Vec::new());
        deb.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        deb.append(
            &ar::Header::new(b"data.tar.xz".to_vec(), data.len() as u64),
            &data[..],
        )
        .unwrap();
        let deb = deb.into_inner().unwrap();

        let dir = std::env::temp_dir().join(format!("kk-deb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.deb"), deb).unwrap();
        let got = extract_vmlinuz(
            &dir.join("t.deb"),
            &dir.join("vmlinuz"),
            &dir.join("config"),
        )
        .unwrap();
        assert_eq!(
            got,
            Extracted {
                release: "1.2.3-test".into(),
                config: true
            }
        );
        assert_eq!(std::fs::read(dir.join("vmlinuz")).unwrap(), b"KERNEL");
        assert_eq!(std::fs::read(dir.join("config")).unwrap(), b"cfg");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
