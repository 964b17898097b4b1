//! Writes every generated file of the repository: the CRDs (`config/crd/`), the workloads
//! (`config/deploy/`), the cert-manager objects (`config/cert-manager/`), the OLM bundle
//! (`bundle/`) and the API reference (`docs/api.md`). `cargo test` fails when the committed files
//! differ from what this writes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = evpn_deploy::files::repo_root();
    let result = evpn_deploy::files::generate(&root).and_then(|files| evpn_deploy::files::write(&root, &files));
    match result {
        Ok(changed) if changed.is_empty() => {
            println!("generated files are up to date");
            ExitCode::SUCCESS
        }
        Ok(changed) => {
            for path in changed {
                println!("updated {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}
