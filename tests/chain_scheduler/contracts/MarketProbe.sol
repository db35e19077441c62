// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Read many of the market's views in one call (test only).
/// @notice The invariant test checks the whole market after every step; one eth_call
/// through this probe replaces dozens. It calls the market's public views
/// (getJob, getSlot, challengeBondOf, slashPoolOf, getProvider, creditOf) and returns
/// their raw words, so the test reads exactly what any client would read.
contract MarketProbe {
    error ProbeCallFailed(bytes data);

    /// @param market The ChainScheduler.
    /// @param jobIds Jobs to read.
    /// @param slotCounts Slots to read per job (same order as `jobIds`).
    /// @param providers Providers whose stake to read.
    /// @param accounts Accounts whose credit to read.
    /// @return out One flat array, in this order: the 9 words of `getJob` per job; the 5
    /// words of `getSlot` per slot, job after job; `challengeBondOf` per job; `slashPoolOf`
    /// per job; free and locked stake per provider; `creditOf` per account.
    function read(
        address market,
        uint256[] memory jobIds,
        uint256[] memory slotCounts,
        address[] memory providers,
        address[] memory accounts
    ) public view returns (uint256[] memory out) {
        uint256 totalSlots;
        for (uint256 i = 0; i < slotCounts.length; ++i) totalSlots += slotCounts[i];
        out = new uint256[](jobIds.length * 11 + totalSlots * 5 + providers.length * 2 + accounts.length);
        uint256 at;
        for (uint256 i = 0; i < jobIds.length; ++i) {
            at = _copy(_view(market, abi.encodeWithSignature("getJob(uint256)", jobIds[i])), 9, out, at);
        }
        for (uint256 i = 0; i < jobIds.length; ++i) {
            for (uint256 j = 0; j < slotCounts[i]; ++j) {
                bytes memory data = abi.encodeWithSignature("getSlot(uint256,uint8)", jobIds[i], uint8(j));
                at = _copy(_view(market, data), 5, out, at);
            }
        }
        for (uint256 i = 0; i < jobIds.length; ++i) {
            at = _copy(_view(market, abi.encodeWithSignature("challengeBondOf(uint256)", jobIds[i])), 1, out, at);
        }
        for (uint256 i = 0; i < jobIds.length; ++i) {
            at = _copy(_view(market, abi.encodeWithSignature("slashPoolOf(uint256)", jobIds[i])), 1, out, at);
        }
        for (uint256 i = 0; i < providers.length; ++i) {
            at = _copy(_view(market, abi.encodeWithSignature("getProvider(address)", providers[i])), 2, out, at);
        }
        for (uint256 i = 0; i < accounts.length; ++i) {
            at = _copy(_view(market, abi.encodeWithSignature("creditOf(address)", accounts[i])), 1, out, at);
        }
    }

    function _view(address market, bytes memory data) private view returns (bytes memory ret) {
        bool ok;
        (ok, ret) = market.staticcall(data);
        if (!ok) revert ProbeCallFailed(ret);
    }

    function _word(bytes memory data, uint256 index) private pure returns (uint256 value) {
        assembly {
            value := mload(add(data, add(32, mul(32, index))))
        }
    }

    function _copy(bytes memory data, uint256 n, uint256[] memory out, uint256 at) private pure returns (uint256) {
        for (uint256 w = 0; w < n; ++w) out[at + w] = _word(data, w);
        return at + n;
    }
}
