"""Existing engines that run the folder jobs past one machine (Ray Data); imported only when
asked for, so their packages stay optional extras."""
