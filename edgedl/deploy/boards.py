"""Microcontroller boards a model may be fitted to: on-chip SRAM and flash from each datasheet.

``ram_reserve_kb`` and ``flash_reserve_kb`` are what the board's usual runtime keeps for itself
(RTOS, radio stack, USB, stacks, bootloader): estimates, stated as such, so that "fits" means
"fits beside a typical application", not "fits in an empty chip". ``largest_block_kb`` is the
largest contiguous SRAM block where a chip splits its SRAM (the tensor arena must be contiguous).
Figures marked ✓Z were cross-checked against Zephyr's devicetree files (which encode the datasheet
memory maps) on 2026-11-27.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Board:
    name: str
    chip: str
    sram_kb: int
    flash_kb: int
    ram_reserve_kb: int
    flash_reserve_kb: int
    source: str
    largest_block_kb: int | None = None

    @property
    def usable_ram(self) -> int:
        """Bytes a tensor arena and I/O buffers may take: the largest block, less the runtime's share."""
        return ((self.largest_block_kb or self.sram_kb) - self.ram_reserve_kb) * 1024

    @property
    def usable_flash(self) -> int:
        return (self.flash_kb - self.flash_reserve_kb) * 1024


BOARDS = {
    "nano33ble": Board("Arduino Nano 33 BLE Sense", "nRF52840, Cortex-M4F 64 MHz", 256, 1024, 64, 256,
                       "Nordic nRF52840 Product Specification; Arduino ABX00031 datasheet; ✓Z nrf52840_qiaa.dtsi. "
                       "Reserve: Arduino Mbed OS core with BLE (estimate)"),
    "pico": Board("Raspberry Pi Pico", "RP2040, 2× Cortex-M0+ 133 MHz, no FPU", 264, 2048, 16, 64,
                  "RP2040 Datasheet; Raspberry Pi Pico Datasheet (2 MB W25Q16JV QSPI flash). Reserve: Pico SDK, "
                  "stacks (estimate)"),
    "pico2": Board("Raspberry Pi Pico 2", "RP2350A, 2× Cortex-M33F 150 MHz", 520, 4096, 16, 64,
                   "RP2350 Datasheet; Raspberry Pi Pico 2 Datasheet; ✓Z rp2350.dtsi. Reserve: Pico SDK (estimate)"),
    "nano-rp2040": Board("Arduino Nano RP2040 Connect", "RP2040, 2× Cortex-M0+ 133 MHz", 264, 16384, 48, 512,
                         "Arduino ABX00053 datasheet (16 MB AT25SF128A). Reserve: Arduino Mbed OS core, Wi-Fi "
                         "(estimate)"),
    "esp32s3": Board("ESP32-S3-WROOM-1 (N8R8)", "ESP32-S3, 2× Xtensa LX7 240 MHz", 512, 8192, 212, 1024,
                     "Espressif ESP32-S3 Series Datasheet; ESP32-S3-WROOM-1 Datasheet. Reserve: ESP-IDF caches, "
                     "IRAM code, Wi-Fi/BT (about 300 KB of heap left: estimate); 8 MB PSRAM not counted"),
    "esp32": Board("ESP32-WROOM-32E", "ESP32, 2× Xtensa LX6 240 MHz", 520, 4096, 320, 1024,
                   "Espressif ESP32 Series Datasheet; ESP32-WROOM-32E Datasheet; ESP-IDF Memory Types (at most "
                   "~160 KB static DRAM; the arena must come from the heap). Reserve: estimate"),
    "stm32f401re": Board("ST NUCLEO-F401RE", "STM32F401RE, Cortex-M4F 84 MHz", 96, 512, 8, 32,
                         "ST DS10086; ✓Z stm32f401Xe.dtsi. Reserve: HAL, stack (estimate)"),
    "stm32f446re": Board("ST NUCLEO-F446RE", "STM32F446RE, Cortex-M4F 180 MHz", 128, 512, 8, 32,
                         "ST DS10693; ✓Z stm32f446Xe.dtsi. Reserve: HAL, stack (estimate)"),
    "stm32l476rg": Board("ST NUCLEO-L476RG", "STM32L476RG, Cortex-M4F 80 MHz", 128, 1024, 8, 32,
                         "ST DS10198; ✓Z stm32l476Xg.dtsi; SRAM1 96 KB + SRAM2 32 KB, not contiguous",
                         largest_block_kb=96),
    "stm32h743": Board("ST NUCLEO-H743ZI2", "STM32H743ZI, Cortex-M7 480 MHz", 1024, 2048, 16, 64,
                       "ST DS12110; ✓Z stm32h743.dtsi; 1 MB in blocks, the largest the 512 KB AXI SRAM",
                       largest_block_kb=512),
    "portenta-h7": Board("Arduino Portenta H7", "STM32H747XI, Cortex-M7 480 MHz + M4", 1024, 2048, 64, 512,
                         "Arduino ABX00042 datasheet; ST STM32H747xI datasheet; 8 MB SDRAM not counted",
                         largest_block_kb=512),
    "nrf5340": Board("Nordic nRF5340 (application core)", "nRF5340, Cortex-M33 128 MHz", 512, 1024, 48, 128,
                     "Nordic nRF5340 Product Specification; ✓Z nrf5340_cpuapp_qkaa.dtsi. Reserve: Zephyr, BLE host "
                     "(estimate)"),
    "apollo3": Board("SparkFun Edge (Ambiq Apollo3 Blue)", "Apollo3 Blue, Cortex-M4F 48/96 MHz", 384, 1024, 16, 64,
                     "Ambiq Apollo3 Blue Datasheet; ✓Z ambiq_apollo3_blue.dtsi (64 KB TCM + 320 KB SRAM)",
                     largest_block_kb=320),
}


def board(name: str) -> Board:
    from ..core.errors import UsageError

    key = name.lower()
    if key not in BOARDS:
        raise UsageError(f"unknown board {name!r}", hint=f"choose from {', '.join(sorted(BOARDS))}")
    return BOARDS[key]


def fit(needs_ram: int, needs_flash: int, target: Board) -> dict:
    """Does a model needing these bytes fit the board beside its runtime? With the headroom left."""
    ram_left, flash_left = target.usable_ram - needs_ram, target.usable_flash - needs_flash
    return {"board": target.name, "fits": ram_left >= 0 and flash_left >= 0, "ram_headroom": ram_left,
            "flash_headroom": flash_left, "usable_ram": target.usable_ram, "usable_flash": target.usable_flash}


def board_core(target: Board) -> tuple[str, int] | None:
    """(the -mcpu name of the board's Cortex-M core, its clock in MHz), read from the chip's description;
    None for a core that is not a Cortex-M (ESP32's Xtensa), which `edgedl firmware` cannot emulate."""
    import re

    match = re.search(r"Cortex-M(\d+)(\+?)F?\s+(?:\d+/)?(\d+) MHz", target.chip)
    if not match:
        return None
    return f"cortex-m{match.group(1)}{'plus' if match.group(2) else ''}", int(match.group(3))
