//! ale-sys builds ALE as a static C++ library but does not link the C++ runtime.
fn main() {
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rerun-if-changed=build.rs");
}
