"""The YAML configs of gan_cli, shipped inside the package so that an installed `gan-train` finds them."""
