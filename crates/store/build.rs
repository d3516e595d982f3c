// `sqlx::migrate!` embeds the migrations at compile time: rebuild when one is added or
// changed, even if no Rust source changed (otherwise a new migration is silently missing
// from an incremental build).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
