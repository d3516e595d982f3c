//! Copies of a node's data dir, made as a user makes them: a backup (every file, copied
//! while the node is stopped or not), a restore (the data dir replaced by the backup), a
//! clone (a second machine set up from the backup). Modes are kept: the node refuses a
//! data dir whose secrets group or others may read, and narrows the rest.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copies the data dir `from` to `to` (which must not exist): every file and directory,
/// each with its permission bits.
pub fn copy_data_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_data_dir(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
            keep_mode(&src, &dst);
        }
    }
    keep_mode(from, to);
}

/// Replaces the data dir `data` with a copy of `backup`, as a restore from a backup does.
pub fn restore_data_dir(backup: &Path, data: &Path) {
    fs::remove_dir_all(data).unwrap_or_else(|e| panic!("remove {}: {e}", data.display()));
    copy_data_dir(backup, data);
}

/// Gives `dst` the permission bits of `src`.
fn keep_mode(src: &Path, dst: &Path) {
    let mode = fs::metadata(src).expect("metadata").permissions().mode();
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
}
