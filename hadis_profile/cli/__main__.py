"""``python -m hadis_profile.cli``: the same as the ``hadis-profile`` command."""

from hadis_profile.cli import main

main()
