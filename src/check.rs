//! `sluice check` and `sluice crds`: the commands that start nothing.

use std::process::ExitCode;

use anyhow::{Context, bail};
use sluice_controller::error::Severity;
use sluice_controller::standalone::ManifestFolder;

use crate::cli::{CheckArgs, compile_options};

/// Compiles a folder of manifests and prints each object's problems; fails on errors.
pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if !args.manifests.is_dir() {
        bail!("{} is not a folder", args.manifests.display());
    }
    let loaded = ManifestFolder::new(&args.manifests).load();
    let compiled = sluice_controller::compile::compile(
        &loaded.objects,
        &Default::default(),
        &compile_options(&args.class),
    );
    let mut errors = 0usize;
    for problem in &loaded.problems {
        println!("{problem}");
    }
    errors += usize::from(loaded.has_errors);
    for (key, object_errors) in &compiled.statuses {
        for error in object_errors {
            let notice = error.severity() == Severity::Notice;
            let level = if notice { "note" } else { "error" };
            errors += usize::from(!notice);
            println!("{level}: {key}: {error}");
        }
    }
    println!(
        "{} Ingresses of class {:?} accepted, {} errors",
        compiled.accepted_ingresses.len(),
        args.class.ingress_class,
        errors
    );
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the CustomResourceDefinitions of the sluice.dev resources as YAML.
pub fn print_crds() -> anyhow::Result<ExitCode> {
    let yaml = sluice_crds::definitions_yaml().context("cannot render the CRDs")?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}
