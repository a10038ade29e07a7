using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Retrieval.Bench;

/// <summary>
/// Puts the benchmark's processes on chosen CPUs (Linux sched_setaffinity), so the services can be measured on a set
/// number of cores while the load generator runs on others, as callers do in production. A service started from a
/// pinned thread inherits the mask from its first instruction, and its runtime sizes itself (processor count, thread
/// pool, spinning, GC heaps) to the CPUs it was given.
/// </summary>
internal static partial class CpuAffinity
{
    /// <summary>Parses a CPU list such as "0,1", "2-3" or "0,4-7"; null or empty means no pinning.</summary>
    public static int[]? Parse(string? list, string option)
    {
        if (string.IsNullOrWhiteSpace(list))
        {
            return null;
        }
        var cpus = new SortedSet<int>();
        foreach (var part in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var ends = part.Split('-', 2);
            if (!int.TryParse(ends[0], NumberStyles.None, CultureInfo.InvariantCulture, out int first)
                || !int.TryParse(ends[^1], NumberStyles.None, CultureInfo.InvariantCulture, out int last) || last < first)
            {
                throw new ArgumentException($"{option}: '{part}' is not a CPU number or range such as 0 or 2-3");
            }
            for (int cpu = first; cpu <= last; cpu++)
            {
                if (cpu >= Environment.ProcessorCount)
                {
                    throw new ArgumentException($"{option}: CPU {cpu} does not exist here (CPUs 0-{Environment.ProcessorCount - 1})");
                }
                cpus.Add(cpu);
            }
        }
        return cpus.Count > 0 ? [.. cpus] : throw new ArgumentException($"{option}: no CPU in '{list}'");
    }

    /// <summary>Pins every thread of this process (threads started later inherit their creator's CPUs).</summary>
    public static void PinThisProcess(int[] cpus)
    {
        RequireLinux();
        foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            // A thread that ended since the listing is no loss; any other failure is.
            if (int.TryParse(Path.GetFileName(task), CultureInfo.InvariantCulture, out int tid) && !TryPin(tid, cpus, out int error) && error != Esrch)
            {
                throw new InvalidOperationException($"could not pin thread {tid} to CPUs {Describe(cpus)} (errno {error})");
            }
        }
    }

    /// <summary>Starts a process on <paramref name="cpus"/> (from a thread pinned to them), or as usual when null.</summary>
    public static Process Start(ProcessStartInfo start, int[]? cpus)
    {
        if (cpus is null)
        {
            return Process.Start(start)!;
        }
        RequireLinux();
        Process? process = null;
        Exception? failure = null;
        var spawner = new Thread(() =>
        {
            try
            {
                if (!TryPin(0, cpus, out int error))
                {
                    throw new InvalidOperationException($"could not pin to CPUs {Describe(cpus)} (errno {error})");
                }
                process = Process.Start(start);
            }
            catch (Exception e)
            {
                failure = e;
            }
        })
        { Name = "pinned process start" };
        spawner.Start();
        spawner.Join();
        return failure is null ? process! : throw new InvalidOperationException($"could not start {start.FileName} on CPUs {Describe(cpus)}", failure);
    }

    public static string Describe(int[] cpus) => string.Join(',', cpus);

    private const int Esrch = 3;

    private static bool TryPin(int tid, int[] cpus, out int error)
    {
        var mask = new ulong[(cpus.Max() / 64) + 1];
        foreach (int cpu in cpus)
        {
            mask[cpu / 64] |= 1UL << (cpu % 64);
        }
        bool pinned = SchedSetAffinity(tid, mask.Length * sizeof(ulong), mask) == 0;
        error = pinned ? 0 : Marshal.GetLastPInvokeError();
        return pinned;
    }

    private static void RequireLinux()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("--service-cpus and --generator-cpus pin processes with Linux's sched_setaffinity; on other systems start the benchmark under the system's own tool (start /affinity, taskpolicy)");
        }
    }

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nint cpuSetSize, ulong[] mask);
}
