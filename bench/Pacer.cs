using System.Runtime.InteropServices;

namespace Retrieval.Bench;

/// <summary>
/// How the open loop's pacer thread waits for the next request to come due. By default, and on systems other than
/// Linux, it sleeps a millisecond at a time (<c>Thread.Sleep(1)</c>, a little over 1 ms on Linux): every request then
/// waits up to that millisecond before it is sent, a wait its latency from schedule includes, and a tick's requests go
/// out together. With a shorter interval on Linux it sleeps until the next request's due time (clock_nanosleep, with
/// the thread's timer slack cut from the kernel's 50 µs to 1 µs) but wakes at most once per interval, so requests go
/// out nearer their due times, in smaller steps. Measured (bench/README.md): the shorter wait is gone from the p50, but
/// requests that arrive one or two at a time cost the services more thread wake-ups per call, and the p99 is no lower.
/// </summary>
internal sealed partial class Pacer
{
    /// <summary>The default least time between two wake-ups: a millisecond, the open loop's pacing since it was written.</summary>
    public const int DefaultIntervalMicroseconds = 1000;

    /// <summary>The interval's bounds, in microseconds: 1,000 is the millisecond sleeper, nothing sleeps less than 10.</summary>
    public const int MinIntervalMicroseconds = 10, MaxIntervalMicroseconds = 1000;

    private readonly bool _precise;

    public Pacer(int intervalMicroseconds)
    {
        if (intervalMicroseconds is < MinIntervalMicroseconds or > MaxIntervalMicroseconds)
        {
            throw new ArgumentException($"--pacer-us: {intervalMicroseconds} is not between {MinIntervalMicroseconds} and {MaxIntervalMicroseconds:N0} µs");
        }
        IntervalMicroseconds = intervalMicroseconds;
        _precise = OperatingSystem.IsLinux() && intervalMicroseconds < MaxIntervalMicroseconds;
    }

    public int IntervalMicroseconds { get; }

    /// <summary>The least time between wake-ups as it is here: 1,000 µs where the pacer cannot sleep less.</summary>
    public int EffectiveMicroseconds => _precise ? IntervalMicroseconds : 1000;

    /// <summary>For the log: "200 µs", or "1 ms" for a millisecond sleeper.</summary>
    public string Describe() => _precise ? $"{IntervalMicroseconds} µs" : "1 ms";

    /// <summary>Call on the pacer thread before it starts: asks the kernel to wake it within 1 µs of the time it asks for.</summary>
    public void OnPacerThread()
    {
        if (_precise)
        {
            _ = Prctl(PrSetTimerSlack, 1000, 0, 0, 0); // nanoseconds; a refusal leaves the default 50 µs slack
        }
    }

    /// <summary>Sleeps until <paramref name="dueSeconds"/> (on the clock that reads <paramref name="nowSeconds"/>), but at least one interval.</summary>
    public void WaitUntil(double dueSeconds, double nowSeconds)
    {
        if (!_precise)
        {
            Thread.Sleep(1);
            return;
        }
        double seconds = Math.Max(dueSeconds - nowSeconds, IntervalMicroseconds * 1e-6);
        long nanoseconds = (long)(seconds * 1e9);
        var request = new Timespec { Seconds = (nint)(nanoseconds / 1_000_000_000), Nanoseconds = (nint)(nanoseconds % 1_000_000_000) };
        // An interrupted sleep (EINTR: a signal, such as the runtime's own) returns early: the caller looks at the clock again.
        _ = ClockNanosleep(ClockMonotonic, 0, ref request, IntPtr.Zero);
    }

    private const int ClockMonotonic = 1;
    private const int PrSetTimerSlack = 29;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public nint Seconds;
        public nint Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_nanosleep")]
    private static partial int ClockNanosleep(int clock, int flags, ref Timespec request, IntPtr remaining);

    [LibraryImport("libc", EntryPoint = "prctl")]
    private static partial int Prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);
}
