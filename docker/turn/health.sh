#!/bin/bash
# Healthy while turnserver answers a STUN binding request on its port; a parked
# container (weak secret) has no turnserver, so it stays unhealthy.
set -euo pipefail
turnutils_stunclient -p 3478 127.0.0.1 >/dev/null
