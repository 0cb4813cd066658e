//! `sqlx::migrate!` embeds the migrations when the crate compiles, and cargo does not know it
//! reads them: without this, an added or changed migration is left out of an incremental build.

#[allow(
    clippy::print_stdout,
    reason = "a build script speaks to cargo on stdout"
)]
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
