"""Program overrides: the account states that install an ELF as an upgradeable program."""
from __future__ import annotations

import struct
from typing import Any, Dict

from simsync.protocol import AccountData

UPGRADEABLE_LOADER = "BPFLoaderUpgradeab1e11111111111111111111111"
#: ``UpgradeableLoaderState::ProgramData`` header: tag u32, slot u64, Option<Pubkey>.
PROGRAM_DATA_HEADER = 4 + 8 + 1 + 32
#: Rent: (128 bytes of overhead + data) × 3480 lamports per byte-year × 2 years.
RENT_PER_BYTE, RENT_OVERHEAD, RENT_YEARS = 3480, 128, 2


def rent_exempt_lamports(data_len: int) -> int:
    """The rent-exempt minimum balance of an account holding ``data_len`` bytes."""
    return (RENT_OVERHEAD + data_len) * RENT_PER_BYTE * RENT_YEARS


def program_data_address(program_id: str) -> str:
    """The ProgramData PDA of an upgradeable program (needs ``solders``)."""
    try:
        from solders.pubkey import Pubkey
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError("modify_program needs the 'solders' package: "
                          "pip install 'simsync[local]' (or pip install solders)") from None
    loader = Pubkey.from_string(UPGRADEABLE_LOADER)
    address, _bump = Pubkey.find_program_address([bytes(Pubkey.from_string(program_id))],
                                                 loader)
    return str(address)


def program_accounts(program_id: Any, elf: bytes, deploy_slot: int) -> Dict[str, AccountData]:
    """The overrides that install ``elf`` at ``program_id``: a ProgramData account (deployed
    at ``deploy_slot``, no upgrade authority, rent-exempt) and the program account pointing
    at it. Pass them as ``modify_account_states`` of the next step."""
    from solders.pubkey import Pubkey

    program = str(program_id)
    data_address = program_data_address(program)
    header = struct.pack("<IQB", 3, deploy_slot, 0) + bytes(32)
    program_data = header + bytes(elf)
    program_account = struct.pack("<I", 2) + bytes(Pubkey.from_string(data_address))
    return {
        data_address: AccountData.of(program_data, UPGRADEABLE_LOADER,
                                     rent_exempt_lamports(len(program_data))),
        program: AccountData.of(program_account, UPGRADEABLE_LOADER,
                                rent_exempt_lamports(len(program_account)), executable=True),
    }
