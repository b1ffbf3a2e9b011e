"""``python -m hadis_profile``: the same as the ``hadis-profile`` command."""

from hadis_profile.cli import main

if __name__ == "__main__":
    main()
