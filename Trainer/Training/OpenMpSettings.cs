using System.Runtime.InteropServices;

namespace Retrieval.Trainer.Training;

/// <summary>
/// libtorch's OpenMP threads spin-wait after each parallel region by default, which takes the cores that the
/// fused loss kernel (.NET threads) runs on between torch calls. Passive waiting lets them sleep. libgomp reads
/// OMP_WAIT_POLICY once, when libtorch loads, and .NET's own environment API does not reach native getenv,
/// so this sets it through libc before TorchSharp is first touched. A value the user set is kept.
/// </summary>
public static partial class OpenMpSettings
{
    public static void PreferPassiveWaiting()
    {
        if (OperatingSystem.IsWindows() || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null)
        {
            return;
        }
        try
        {
            _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // No libc setenv on this platform: torch keeps its default, which is only slower.
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
