// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title The few forge (hevm) cheatcodes the Solidity tests use.
/// @notice forge-std cannot be installed here (no git host, and npm's `forge-std` is an
/// old unofficial copy), so the cheatcodes are declared by hand. forge answers calls to
/// `VM_ADDRESS` by selector; the signatures below are the ones forge-std's `Vm.sol` uses.
/// @dev Add a cheatcode by copying its exact signature; a wrong one reverts at run time.
interface Vm {
    /// @notice An event log, as `getRecordedLogs` returns it.
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    /// @notice Set `block.timestamp`.
    function warp(uint256 newTimestamp) external;

    /// @notice Set `block.number`.
    function roll(uint256 newHeight) external;

    /// @notice The current `block.number`. Read it this way after `roll` in the same call: via-IR
    /// treats `block.number` as constant within a transaction and may reuse an earlier read.
    function getBlockNumber() external view returns (uint256 height);

    /// @notice The current `block.timestamp` (same caveat as `getBlockNumber`, after `warp`).
    function getBlockTimestamp() external view returns (uint256 timestamp);

    /// @notice Set the hash `blockhash(blockNumber)` returns (forge's default is
    /// keccak256 of the block number's decimal string). Seen by calls into other contracts.
    function setBlockhash(uint256 blockNumber, bytes32 blockHash) external;

    /// @notice Set `block.prevrandao`.
    function prevrandao(bytes32 newPrevrandao) external;

    /// @notice Make the next call come from `msgSender`.
    function prank(address msgSender) external;

    /// @notice Set the ether balance of `account`.
    function deal(address account, uint256 newBalance) external;

    /// @notice Expect the next call to revert with exactly `revertData`.
    function expectRevert(bytes calldata revertData) external;

    /// @notice Expect the next call to revert with this custom error selector (any arguments).
    function expectRevert(bytes4 revertData) external;

    /// @notice Record every event emitted from now on.
    function recordLogs() external;

    /// @notice The events recorded since `recordLogs` (or the last call of this), and forget them.
    function getRecordedLogs() external returns (Log[] memory logs);

    /// @notice Mark the current test skipped (when `skipTest`); forge stops running it.
    function skip(bool skipTest) external;

    /// @notice The environment variable `name` as a bool, or `defaultValue` when unset.
    function envOr(string calldata name, bool defaultValue) external view returns (bool value);

    /// @notice Deploy the compiled contract `artifactPath` ("File.sol:Contract") with these
    /// constructor arguments. Tests deploy the market this way rather than with `new`: under
    /// via-IR, every test contract that says `new ChainScheduler` embeds and re-optimizes the
    /// whole market, which multiplies the compile time.
    function deployCode(string calldata artifactPath, bytes calldata constructorArgs)
        external
        returns (address deployedAddress);

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
