"""`patou export-camtrap-dp`: a finished run as a Camtrap DP 1.0 package, validated offline."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import fail, say


def export_camtrap_dp_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A finished `patou run` results folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Package folder to write (datapackage.json + 3 CSV)."),
    deployments: Optional[Path] = typer.Option(None, help="CSV of deployments: deploymentID (= site folder), latitude, longitude, utcOffset and any Camtrap DP deployments column."),
    utc_offset: Optional[str] = typer.Option(None, help="Camera clocks' offset from UTC for every deployment, e.g. +01:00 (EXIF times carry none)."),
    sampling_design: Optional[str] = typer.Option(None, help="simpleRandom | systematicRandom | clusteredRandom | experimental | targeted | opportunistic."),
    contributor: Optional[list[str]] = typer.Option(None, "--contributor", help='"Name <email> (role)", repeatable; the first is the contact unless a role says otherwise.'),
    title: Optional[str] = typer.Option(None, help="Project title."),
    data_license: Optional[str] = typer.Option(None, help="Licence of the data, e.g. CC0-1.0 (with --media-license)."),
    media_license: Optional[str] = typer.Option(None, help="Licence of the photos, e.g. CC-BY-4.0 (with --data-license)."),
    media_url: Optional[str] = typer.Option(None, help="Base URL where the photos are published (same layout as under the input folder); default: paths relative to the package (must stay inside it, see --media)."),
    media: Optional[str] = typer.Option(None, "--media", help="copy | link the photos into PACKAGE/media/ (keeping the input tree): Camtrap DP paths must stay inside the package."),
    capture_method: str = typer.Option("activityDetection", help="activityDetection (motion trigger) or timeLapse."),
    taxonomy: Optional[Path] = typer.Option(None, help="CSV mapping labels to taxa (default: the bundled table, see README)."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the frictionless validation."),
    blur_humans: bool = typer.Option(False, "--blur-humans", help="With --media copy: blur every person (human or person box) in the copies; the originals stay as they are."),
) -> None:
    """Write a run as a Camtrap DP 1.0 package (for GBIF, Agouti, camtrapdp...) and validate it offline."""
    from ..formats.camtrap_dp import export_camtrap_dp

    try:
        result = export_camtrap_dp(
            results_dir, out, deployments, utc_offset=utc_offset, sampling_design=sampling_design,
            contributors=contributor, title=title, data_license=data_license, media_license=media_license,
            media_url=media_url, media=media, capture_method=capture_method, taxonomy=taxonomy, validate=not no_validate,
            blur_humans=blur_humans, log=say)
    except (ValueError, OSError) as e:
        fail(e)
    c = result.counts
    say(f"{c['deployments']} deployments, {c['media']} media, {c['event_observations']} event and "
        f"{c['media_observations']} media observations ({c['human_verified_events']} events human-verified) "
        f"in {result.out}")
    if result.problems:
        say("not a valid Camtrap DP 1.0 package:", "red")
        for line in result.problems:
            say(f"  {line}")
        raise typer.Exit(1)
    if result.valid:
        say("valid Camtrap DP 1.0 package (frictionless, offline)")
