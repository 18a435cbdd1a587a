//! Key material for tests, made fresh with the system `openssl`: an RSA key
//! pair for RS256 tokens, so no private key is ever checked in.

use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 2048-bit RSA key pair written under `dir`: (private PEM, public PEM).
pub fn rsa_pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let _ = std::fs::create_dir_all(dir);
    let key = dir.join("key.pem");
    let public = dir.join("public.pem");
    let (k, p) = (key.display().to_string(), public.display().to_string());
    openssl(&["genrsa", "-out", &k, "2048"]);
    openssl(&["rsa", "-in", &k, "-pubout", "-out", &p]);
    let read =
        |f: &Path| std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
    (read(&key), read(&public))
}
