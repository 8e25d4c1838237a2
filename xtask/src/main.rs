//! `cargo run -p xtask -- split-wasm INPUT.wasm OUT_DIR`: splits the console's WASM (as rustc
//! linked it, with `--emit-relocs`) at its `#[lazy]` / `#[lazy_route]` split points, the way
//! `cargo leptos --split` does. Writes into OUT_DIR:
//! - the chunks, `<name>.<build>.wasm`;
//! - their loader, `__wasm_split.<build>.js`, which the main module imports;
//! - `__wasm_split_manifest.json`: the chunks each split point needs (the server links them
//!   as `preload`s of the page that will need them);
//!
//! and the main module `INPUT_split.wasm` beside INPUT, for `wasm-bindgen --keep-lld-exports
//! --no-demangle`.
//!
//! `<build>` is a digest of INPUT: a main module only ever finds its own build's loader and
//! chunks. A browser holding an older build's main module (cached for good under its
//! `/pkg/<version>/`) gets a 404 for its chunks after an upgrade, never a newer build's chunk
//! wired into its function table.
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, input, out_dir] if cmd == "split-wasm" => split(Path::new(input), Path::new(out_dir)),
        _ => bail!("usage: xtask split-wasm INPUT.wasm OUT_DIR"),
    }
}

fn split(input: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let wasm = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let build = hex::encode(&Sha256::digest(&wasm)[..8]);
    std::fs::create_dir_all(out_dir)?;
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .context("input has no file name")?;
    let main_out: PathBuf = input.with_file_name(format!("{stem}_split.wasm"));
    let loader = format!("__wasm_split.{build}.js");
    let link_name = format!("./{loader}");
    let split = wasm_split_cli_support::transform({
        let mut opts = wasm_split_cli_support::Options::new(&wasm);
        opts.output_dir = out_dir;
        opts.main_out_path = &main_out;
        // Relative to the loader's own address: chunks share the page's instance of the main
        // module wherever the bundle is served from (`/pkg/<version>/`).
        opts.main_module = "./warden.js";
        opts.link_name = &link_name;
        opts.verbose = false;
        opts
    })
    .map_err(|e| anyhow::anyhow!("splitting {} failed: {e}", input.display()))?;

    // The chunks under their build's names, in the loader and the manifest too.
    let loader_path = out_dir.join(&loader);
    let mut js = std::fs::read_to_string(&loader_path)
        .with_context(|| format!("the splitter wrote no loader {}", loader_path.display()))?;
    let mut renamed = HashMap::new();
    for module in &split.split_modules {
        let name = module
            .file_stem()
            .and_then(|s| s.to_str())
            .context("a chunk without a name")?
            .to_owned();
        let new_name = format!("{name}.{build}");
        let (from, to) = (
            format!("\"./{name}.wasm\""),
            format!("\"./{new_name}.wasm\""),
        );
        if !js.contains(&from) {
            bail!("the loader does not name the chunk {name}");
        }
        js = js.replace(&from, &to);
        std::fs::rename(module, module.with_file_name(format!("{new_name}.wasm")))?;
        renamed.insert(name, new_name);
    }
    std::fs::write(&loader_path, js)?;
    // Every chunk a split point needs is one the splitter wrote: a name it did not would be a
    // preload of a file that is not there.
    let manifest = split
        .prefetch_map
        .iter()
        .map(|(split_point, chunks)| {
            let chunks = chunks
                .iter()
                .map(|c| {
                    renamed
                        .get(c)
                        .with_context(|| format!("{split_point} needs {c}, which was not written"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((split_point, chunks))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    std::fs::write(
        out_dir.join("__wasm_split_manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    println!("{} chunks, loader {loader}", split.split_modules.len());
    Ok(())
}
