// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title The few forge (hevm) cheatcodes the Solidity tests use.
/// @notice forge-std cannot be installed here (no git host, and npm's `forge-std` is an
/// old unofficial copy), so the cheatcodes are declared by hand. forge answers calls to
/// `VM_ADDRESS` by selector; the signatures below are the ones forge-std's `Vm.sol` uses.
/// @dev Add a cheatcode by copying its exact signature; a wrong one reverts at run time.
interface Vm {
    /// @notice Set `block.timestamp`.
    function warp(uint256 newTimestamp) external;

    /// @notice Set `block.number`.
    function roll(uint256 newHeight) external;

    /// @notice Set `block.prevrandao`.
    function prevrandao(bytes32 newPrevrandao) external;

    /// @notice Make the next call come from `msgSender`.
    function prank(address msgSender) external;

    /// @notice Set the ether balance of `account`.
    function deal(address account, uint256 newBalance) external;

    /// @notice Expect the next call to revert with exactly `revertData`.
    function expectRevert(bytes calldata revertData) external;

    /// @notice Give `account` a readable name in traces.
    function label(address account, string calldata newLabel) external;
}

/// @dev Where forge answers cheatcode calls: address(uint160(uint256(keccak256("hevm cheat code")))).
Vm constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @dev forge's console, the address forge-std's `console.log` calls; shown by `forge test -vv`.
address constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

/// @notice Print `label value` in forge's test logs (a no-op outside forge).
function consoleLog(string memory label, uint256 value) view {
    // A low-level call: the console address has no code, so a typed call would revert.
    (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", label, value));
    if (!ok) return;
}
