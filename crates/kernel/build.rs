//! `sqlx::migrate!` embeds `migrations/` in the kernel: rebuild when a
//! migration is added, changed or removed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
