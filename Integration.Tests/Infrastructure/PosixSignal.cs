using System.Runtime.InteropServices;

namespace Retrieval.Tooling;

/// <summary>
/// Sends a POSIX signal to a process with libc's <c>kill()</c>, rather than by starting the <c>kill</c> program: no
/// fork of a large process in the middle of a test or a measured benchmark phase. Shared by the integration tests
/// and <c>bench</c> (linked into its project).
/// </summary>
internal static partial class PosixSignal
{
    /// <summary>Whether this system has the signals below (Linux, macOS); elsewhere <see cref="Send"/> throws.</summary>
    public static bool Supported => OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();

    /// <summary>Asks the process to stop, as a deployment does.</summary>
    public static int Terminate => 15;

    /// <summary>Freezes the process until <see cref="Continue"/>.</summary>
    public static int Stop => OperatingSystem.IsMacOS() ? 17 : 19;

    /// <summary>Resumes a frozen process.</summary>
    public static int Continue => OperatingSystem.IsMacOS() ? 19 : 18;

    /// <summary>Sends <paramref name="signal"/> (one of the properties above) to process <paramref name="pid"/>.</summary>
    public static void Send(int pid, int signal)
    {
        if (!Supported)
        {
            throw new PlatformNotSupportedException("sending POSIX signals needs Linux or macOS");
        }
        if (Kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
