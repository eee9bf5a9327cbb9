//! The offline rendering tools: `avatar-edge render` (one generated default
//! to a file) and `avatar-edge contact-sheet` (every style at every size).

use anyhow::Context;

fn format_of(path: &std::path::Path) -> anyhow::Result<crate::pipeline::OutputFormat> {
    use crate::pipeline::OutputFormat;
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
    {
        Some(e) if e == "png" => Ok(OutputFormat::Png),
        Some(e) if e == "jpg" || e == "jpeg" => Ok(OutputFormat::Jpeg),
        Some(e) if e == "webp" => Ok(OutputFormat::Webp),
        Some(e) if e == "avif" => Ok(OutputFormat::Avif),
        _ => anyhow::bail!("output must end in .png, .jpg, .jpeg, .webp or .avif"),
    }
}

/// The seed bytes for a key: the hash bytes for a 32/64-hex hash, else the text.
fn seed_of(key: &str) -> Vec<u8> {
    match key.parse::<crate::model::IdentityHash>() {
        Ok(h) => h.as_bytes().to_vec(),
        Err(_) => key.as_bytes().to_vec(),
    }
}

pub(super) fn render(
    style: &str,
    key: &str,
    size: u32,
    initials: Option<&str>,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    let style = crate::identicon::Style::parse(style)
        .with_context(|| format!("unknown style {style:?}"))?;
    use crate::model::{MAX_OUTPUT_SIDE, MIN_OUTPUT_SIDE};
    anyhow::ensure!(
        (MIN_OUTPUT_SIDE..=MAX_OUTPUT_SIDE).contains(&size),
        "size must be {MIN_OUTPUT_SIDE}..={MAX_OUTPUT_SIDE}"
    );
    let format = format_of(output)?;
    let px = crate::identicon::render(style, &seed_of(key), size, initials);
    let bytes = crate::pipeline::encode(&px, format, crate::pipeline::Encoding::LOSSLESS)?;
    std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "wrote {} ({size}x{size} {})",
        output.display(),
        style.as_str()
    );
    Ok(())
}

/// The example identities shown on the contact sheet.
pub const CONTACT_SHEET_EMAILS: [&str; 4] = [
    "alice@example.org",
    "bob@example.org",
    "carol@example.org",
    "dave@example.org",
];

pub(super) fn contact_sheet(output: &std::path::Path) -> anyhow::Result<()> {
    let seeds: Vec<Vec<u8>> = CONTACT_SHEET_EMAILS
        .iter()
        .map(|e| {
            crate::model::IdentityKeys::parse(e)
                .expect("valid example")
                .aliases[0]
                .as_bytes()
                .to_vec()
        })
        .collect();
    let refs: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let px = crate::identicon::contact_sheet(&refs, &[16, 32, 64, 128]);
    let bytes = crate::pipeline::encode(
        &px,
        crate::pipeline::OutputFormat::Png,
        crate::pipeline::Encoding::LOSSLESS,
    )?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))?;
    println!("wrote {} ({}x{})", output.display(), px.width, px.height);
    Ok(())
}
