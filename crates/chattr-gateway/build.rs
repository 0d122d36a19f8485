//! Embeds the web app: every file under `web/` except the test tooling (`tests/`,
//! `node_modules/`, npm manifests) becomes a `(path, bytes)` entry of `WEB_FILES`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Entries of `web/` that are development tooling, not part of the served app.
const SKIP: &[&str] = &["node_modules", "tests", "package.json", "package-lock.json"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let mut files = Vec::new();
    collect(&web, &web, &mut files);
    files.sort();
    let mut code = String::from("/// Files of the web app: (path relative to `web/`, contents).\n");
    code.push_str("pub static WEB_FILES: &[(&str, &[u8])] = &[\n");
    for (relative, absolute) in &files {
        let _ = writeln!(code, "    ({relative:?}, include_bytes!({:?})),", absolute.display().to_string());
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_files.rs");
    std::fs::write(out, code).expect("write web_files.rs");
    println!("cargo:rerun-if-changed={}", web.display());
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if dir == root && SKIP.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            let absolute = path.canonicalize().unwrap_or(path.clone());
            files.push((relative, absolute));
        }
    }
}
