//! `anocast keygen`: a node signing key and its public line.

use crate::args::KeygenArgs;

/// Writes the key pair and prints the public key line.
pub(crate) fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.node_id {
        anocast::names::check_node_id(id)?;
    }
    let key = anocast::anocast_wire::NodeKey::generate()?;
    anocast::trust::write_key(&args.out, &key, args.node_id.as_deref(), &args.roles)?;
    eprintln!(
        "wrote {} (keep it private) and {}",
        args.out.display(),
        anocast::trust::public_key_path(&args.out).display()
    );
    match &args.node_id {
        Some(id) => println!("{} {id} {}", key.public(), args.roles),
        None => {
            eprintln!("note: without --node-id the line trusts the key for every node id (`*`)");
            println!("{} * {}", key.public(), args.roles);
        }
    }
    Ok(())
}
