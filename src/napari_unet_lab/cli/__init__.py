"""The command line: ``napari-unet-lab`` and its subcommands (`napari_unet_lab.cli.main`)."""
