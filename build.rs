//! Makes the `VERSION` file the single source of the version string (`ZAI_DASH_VERSION`).
fn main() {
    println!("cargo:rerun-if-changed=VERSION");
    let version = std::fs::read_to_string("VERSION").expect("the VERSION file must exist at the crate root");
    println!("cargo:rustc-env=ZAI_DASH_VERSION={}", version.trim());
}
