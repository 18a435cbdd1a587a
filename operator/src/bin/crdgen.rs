//! `crdgen`: prints the PaymentPipeline CRD as YAML, for `crds/`.

fn main() -> anyhow::Result<()> {
    print!("{}", paystream_operator::crd::crd_yaml()?);
    Ok(())
}
