//! Embeds the numbered SQL files of `schemas/sql/` into the binary, so `ordo
//! migrate` needs nothing beside the executable and a new file cannot be
//! forgotten in a hand-kept list.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../schemas/sql");
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("schemas/sql must exist") {
        let path = entry.expect("readable directory entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !file_name.ends_with(".sql") {
            continue;
        }
        let stem = file_name.trim_end_matches(".sql");
        let (number, name) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("migration {file_name} must be named NNNN_name.sql"));
        let version: u32 = number
            .parse()
            .unwrap_or_else(|_| panic!("migration {file_name} must start with a number"));
        files.push((
            version,
            name.to_owned(),
            path.canonicalize().expect("canonical path"),
        ));
    }
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share the number {}",
            pair[0].0
        );
    }

    let mut out = String::from("/// Every migration of `schemas/sql/`, in order.\npub static MIGRATIONS: &[Migration] = &[\n");
    for (version, name, path) in &files {
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({path:?}) }},",
            path = path.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("migrations.rs"), out).expect("write migrations.rs");
}
