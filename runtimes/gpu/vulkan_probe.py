"""Which Vulkan devices the loader shows, and whether each can run WebGPU ``shader-f16``.

Standard library and numpy only: the ``ort-webgpu`` worker (another ``onnxruntime`` on its
path, no ``runtimes`` package) imports a copy of this file as ``vulkan_probe``; host code
imports it as ``runtimes.gpu.vulkan_probe``. It creates its own short-lived Vulkan instance with
the environment as it is (``VK_ICD_FILENAMES``...), the one Dawn will see.

``shader_f16``: Dawn's Vulkan backend offers WebGPU's ``shader-f16`` only with ``shaderFloat16``
plus 16-bit storage and uniform buffer access; without it a GPU accelerator asked for fp16 runs
in fp32 (SwiftShader: fp16 and fp32 results are identical, measured).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = ["vulkan_devices"]

_VK_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}
_API_1_1 = (1 << 22) | (1 << 12)
# VkStructureType values
_APPLICATION_INFO, _INSTANCE_CREATE_INFO = 0, 1
_FEATURES_2, _FLOAT16_INT8, _16BIT_STORAGE = 1000059000, 1000082000, 1000083000


class _AppInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("pApplicationName", ctypes.c_char_p),
        ("applicationVersion", ctypes.c_uint32),
        ("pEngineName", ctypes.c_char_p),
        ("engineVersion", ctypes.c_uint32),
        ("apiVersion", ctypes.c_uint32),
    ]


class _CreateInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("flags", ctypes.c_uint32),
        ("pApplicationInfo", ctypes.c_void_p),
        ("enabledLayerCount", ctypes.c_uint32),
        ("ppEnabledLayerNames", ctypes.c_void_p),
        ("enabledExtensionCount", ctypes.c_uint32),
        ("ppEnabledExtensionNames", ctypes.c_void_p),
    ]


class _Float16Int8(ctypes.Structure):  # VkPhysicalDeviceShaderFloat16Int8Features
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("shaderFloat16", ctypes.c_uint32),
        ("shaderInt8", ctypes.c_uint32),
    ]


class _Storage16(ctypes.Structure):  # VkPhysicalDevice16BitStorageFeatures
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("storageBuffer16BitAccess", ctypes.c_uint32),
        ("uniformAndStorageBuffer16BitAccess", ctypes.c_uint32),
        ("storagePushConstant16", ctypes.c_uint32),
        ("storageInputOutput16", ctypes.c_uint32),
    ]


class _Features2(ctypes.Structure):  # VkPhysicalDeviceFeatures2 (55 VkBool32 core features)
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("features", ctypes.c_uint32 * 55)]


def _shader_f16(vk: ctypes.CDLL, dev: ctypes.c_void_p) -> bool:
    f16 = _Float16Int8(sType=_FLOAT16_INT8)
    storage = _Storage16(sType=_16BIT_STORAGE, pNext=ctypes.cast(ctypes.pointer(f16), ctypes.c_void_p))
    feats = _Features2(sType=_FEATURES_2, pNext=ctypes.cast(ctypes.pointer(storage), ctypes.c_void_p))
    vk.vkGetPhysicalDeviceFeatures2(dev, ctypes.byref(feats))
    return bool(
        f16.shaderFloat16 and storage.storageBuffer16BitAccess and storage.uniformAndStorageBuffer16BitAccess
    )


def vulkan_devices() -> list[dict[str, Any]]:
    """The Vulkan physical devices (name, type, ids, API version, ``shader_f16``), best effort:
    a missing loader or a failing instance is one entry with an ``error``."""
    try:
        vk = ctypes.CDLL("libvulkan.so.1")
    except OSError as exc:
        return [{"error": f"no Vulkan loader: {exc}"}]
    vk.vkGetPhysicalDeviceProperties.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    vk.vkGetPhysicalDeviceFeatures2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    app = _AppInfo(sType=_APPLICATION_INFO, apiVersion=_API_1_1)
    info = _CreateInfo(sType=_INSTANCE_CREATE_INFO, pApplicationInfo=ctypes.addressof(app))
    instance = ctypes.c_void_p()
    rc = vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if rc != 0:
        return [{"error": f"vkCreateInstance returned {rc}"}]
    try:
        count = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        devices = (ctypes.c_void_p * count.value)()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), devices)
        out = []
        for dev in devices[: count.value]:
            buf = ctypes.create_string_buffer(8192)  # VkPhysicalDeviceProperties is ~824 bytes
            vk.vkGetPhysicalDeviceProperties(dev, buf)
            api, drv, vendor, device, kind = np.frombuffer(buf.raw[:20], dtype=np.uint32).tolist()
            name = buf.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            out.append(
                {
                    "name": name,
                    "type": _VK_TYPES.get(kind, str(kind)),
                    "vendor_id": f"0x{vendor:04x}",
                    "device_id": f"0x{device:04x}",
                    "api_version": f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
                    "driver_version": drv,
                    "shader_f16": _shader_f16(vk, ctypes.c_void_p(dev)) if api >= _API_1_1 else False,
                }
            )
        return out
    finally:
        vk.vkDestroyInstance(instance, None)


if __name__ == "__main__":
    import json

    print(json.dumps(vulkan_devices(), indent=2))
