"""`python -m gan_cli ARGS` is the `gan-train` command; torchrun starts it as `torchrun ... -m gan_cli`."""

from gan_cli.entry import train

train()
