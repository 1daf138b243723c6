//! Fuzz the bbolt reader and etcd's status/verify on arbitrary file contents: they must return
//! faults or errors, never panic, hang or allocate without bound.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = tempfile_in_shm();
    f.1.write_all(data).unwrap();
    let path = &f.0;
    if let Ok(db) = bolt::Db::open(path) {
        let _ = bolt::check(&db);
        if let Ok(Some(b)) = db.bucket(&[b"key"]) {
            if let Ok(mut c) = b.cursor() {
                let mut n = 0;
                while let Ok(Some(_)) = c.next() {
                    n += 1;
                    if n > 100_000 {
                        break;
                    }
                }
            }
            let _ = b.get(b"x");
        }
    }
    let _ = etcd_data::status(path);
    let _ = etcd_data::verify(path, &|_, _| {});
    let _ = std::fs::remove_file(path);
    f.0.clear();
});

/// A per-process scratch file on tmpfs when available.
fn tempfile_in_shm() -> (std::path::PathBuf, std::fs::File) {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let p = std::path::PathBuf::from(format!("{dir}/quorum-fuzz-{}.db", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    (p, f)
}
