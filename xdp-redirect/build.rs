//! Builds the XDP program with clang and generates the Rust side of the ABI
//! header with bindgen, so there is exactly one definition of every shared
//! type, name and constant: `src/bpf/dp_abi.h`.

use std::{env, path::PathBuf, process::Command};

/// (source, object) pairs: the data plane's program, the benchmark
/// baselines, and the decapsulator for load-balancer backends.
const BPF_PROGRAMS: [(&str, &str); 3] = [
    ("src/bpf/dp_xdp.c", "dp_xdp.o"),
    ("src/bpf/dp_baseline.c", "dp_baseline.o"),
    ("src/bpf/dp_decap.c", "dp_decap.o"),
];
const ABI_HEADER: &str = "src/bpf/dp_abi.h";
/// Headers the programs include besides the ABI.
const BPF_HEADERS: [&str; 2] = ["src/bpf/dp_lb.h", "src/bpf/dp_hash.h"];

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={ABI_HEADER}");
    for header in BPF_HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    for (source, object) in BPF_PROGRAMS {
        println!("cargo:rerun-if-changed={source}");
        build_bpf_object(source, &out_dir.join(object));
    }
    generate_abi_bindings(&out_dir);
}

/// The multiarch include directory (`/usr/include/x86_64-linux-gnu`) holds
/// `asm/types.h`, which `linux/types.h` needs; `-target bpf` does not look there.
fn multiarch_include() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    format!("/usr/include/{arch}-linux-gnu")
}

fn build_bpf_object(source: &str, object: &std::path::Path) {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{}", multiarch_include()))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `{clang}` to build the XDP program ({e}); \
                 install clang (scripts/install-deps.sh) or set CLANG=/path/to/clang"
            )
        });
    assert!(
        status.success(),
        "`{clang}` failed to build {source} (exit {status}); the compiler's message is above"
    );
}

fn generate_abi_bindings(out_dir: &std::path::Path) {
    let bindings = bindgen::Builder::default()
        .header(ABI_HEADER)
        .clang_arg(format!("-I{}", multiarch_include()))
        .allowlist_type("dp_.*")
        .allowlist_var("DP_.*")
        .constified_enum_module("dp_.*")
        .derive_default(true)
        .derive_eq(true)
        .derive_hash(true)
        .layout_tests(true)
        .use_core()
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {ABI_HEADER}: {e}"));
    bindings
        .write_to_file(out_dir.join("dp_abi.rs"))
        .expect("write the generated ABI bindings to OUT_DIR");
}
