"""The command line: ``napari-unet-lab`` and its subcommands.

`napari_unet_lab.cli.main` assembles the parser and maps errors to exit codes;
`napari_unet_lab.cli.common` holds what the subcommands share; each subcommand
(``predict``, ``evaluate``, ``train``, ``export``, ``demo``) has its own module.
"""
