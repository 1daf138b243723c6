//! What a repository's compression costs per core: the first MIB MiB of FILE cut as a backup
//! cuts a snapshot (4 KiB chunks: 1 page, the default, and 8 KiB: 2 pages), each chunk framed
//! with zstd as `backup` frames it and unframed as `restore --repo` unframes it
//! ([`repo::format`]), at level -1 (the default: literals left without entropy coding) and 1,
//! against the same bytes as one zstd stream. The per-chunk figures bound `restore --repo` (one
//! core decodes while another walks the snapshot) and `backup` on a machine of few cores.
//!
//! ```text
//! cargo run --release -p repo --example chunk_codec -- FILE [MIB]   (MIB: 400)
//! ```
use std::io::Read;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 2 || a.len() > 3 {
        eprintln!("usage: chunk_codec FILE [MIB]");
        std::process::exit(2);
    }
    let mib: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(400);
    let mut data = Vec::with_capacity(mib << 20);
    std::fs::File::open(&a[1])?.take((mib as u64) << 20).read_to_end(&mut data)?;
    let mb = data.len() as f64 / 1e6;
    let mut rows = Vec::new();
    for level in [-1, 1] {
        let mut comp = zstd::bulk::Compressor::new(level)?;
        for size in [4096usize, 8192] {
            let t = Instant::now();
            let framed: Vec<(Vec<u8>, usize)> = data.chunks(size).map(|c| (repo::format::frame_with(&mut comp, c, level), c.len())).collect();
            let c = t.elapsed().as_secs_f64();
            let stored: usize = framed.iter().map(|(f, _)| f.len()).sum();
            let mut out = Vec::with_capacity(size);
            let t = Instant::now();
            for (f, n) in &framed {
                out.clear();
                repo::format::unframe_into(f, *n, &mut out).ok_or("a chunk did not decode")?;
            }
            rows.push((format!("level {level}, {} KiB chunks", size >> 10), stored, c, t.elapsed().as_secs_f64()));
        }
        let t = Instant::now();
        let whole = zstd::bulk::compress(&data, level)?;
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = zstd::bulk::decompress(&whole, data.len())?;
        let d = t.elapsed().as_secs_f64();
        assert_eq!(back.len(), data.len());
        rows.push((format!("level {level}, one stream"), whole.len(), c, d));
    }

    println!("{:.0} MB of {}, one core", mb, a[1]);
    println!("{:<28} {:>8} {:>16} {:>18}", "", "size", "compress MB/s", "decompress MB/s");
    let row = |name: &str, size: usize, c: f64, d: f64| {
        println!("{name:<28} {:>7.2}% {:>16.0} {:>18.0}", 100.0 * size as f64 / data.len() as f64, mb / c, mb / d);
    };
    for (name, stored, c, d) in &rows {
        row(name, *stored, *c, *d);
    }
    Ok(())
}
