using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Retrieval.Core.Artifact;
using Retrieval.Core.Features;

namespace Retrieval.Core.Serving;

/// <summary>A loaded model version with a count of the requests using it.</summary>
public sealed class LoadedModel
{
    private int _leases;
    private bool _retired;

    internal LoadedModel(ModelArtifact artifact, DateTimeOffset loadedAt)
    {
        Artifact = artifact;
        LoadedAt = loadedAt;
        UserIds = artifact.QueryTower.Features.OfType<UserIdFeature>().FirstOrDefault();
    }

    public ModelArtifact Artifact { get; }

    /// <summary>The query tower's user-id feature, when it has one (whether a user is known), resolved once per model.</summary>
    public UserIdFeature? UserIds { get; }
    public string Version => Artifact.Version;
    public DateTimeOffset LoadedAt { get; }

    /// <summary>When a previous version stops answering (set when a newer one becomes current).</summary>
    public DateTimeOffset? RetireAt { get; internal set; }


    internal bool TryAcquire()
    {
        lock (this)
        {
            if (_retired)
            {
                return false;
            }
            _leases++;
            return true;
        }
    }

    internal void Release()
    {
        bool dispose;
        lock (this)
        {
            _leases--;
            dispose = _retired && _leases == 0;
        }
        if (dispose)
        {
            Artifact.Dispose();
        }
    }

    /// <summary>Stops new leases; the memory goes when the last request using it finishes.</summary>
    internal void Retire()
    {
        bool dispose;
        lock (this)
        {
            _retired = true;
            dispose = _leases == 0;
        }
        if (dispose)
        {
            Artifact.Dispose();
        }
    }
}

/// <summary>A request's hold on one model version: the version cannot be unloaded until the lease is disposed.</summary>
public readonly struct ModelLease(LoadedModel model) : IDisposable
{
    public LoadedModel Model { get; } = model;
    public ModelArtifact Artifact => Model.Artifact;
    public void Dispose() => Model.Release();
}

/// <summary>Settings of a <see cref="ModelStore"/>.</summary>
public sealed record ModelStoreSettings(string Directory, TimeSpan GracePeriod, TimeSpan PollInterval);

/// <summary>
/// The model versions a service answers with. Loads the version that the models folder's <c>current</c> pointer
/// names, watches the pointer (file-system events, and a periodic poll as a fallback), loads a new version in
/// the background and swaps it in atomically. The previous version stays loaded for a grace period, so queries
/// embedded by it during a rollout are still searched against its own candidates; requests hold leases, so
/// a version is never unloaded under a request. A damaged or inconsistent version is refused, logged and
/// counted, and the version already loaded keeps serving.
/// </summary>
public sealed class ModelStore : IDisposable
{
    public static readonly Meter Meter = new("Retrieval.Models");
    private static readonly Counter<long> ReloadFailureCounter =
        Meter.CreateCounter<long>("retrieval.model.reload_failures", description: "Model versions refused (damaged or inconsistent)");
    private static readonly Counter<long> ReloadCounter =
        Meter.CreateCounter<long>("retrieval.model.reloads", description: "Model versions loaded");

    private readonly ModelStoreSettings _settings;
    private readonly ILogger _log;
    private readonly ModelRepository _repository;
    private readonly object _gate = new();
    private readonly SemaphoreSlim _loading = new(1, 1);
    private readonly List<LoadedModel> _previous = [];
    private LoadedModel? _current;
    private string? _refusedVersion;
    private FileSystemWatcher? _watcher;
    private Timer? _timer;
    private long _reloadFailures;
    private bool _disposed;

    public ModelStore(ModelStoreSettings settings, ILogger log)
    {
        _settings = settings;
        _log = log;
        _repository = new ModelRepository(settings.Directory);
        Meter.CreateObservableGauge("retrieval.model.loaded_versions", () => Loaded.Count, description: "Model versions loaded");
    }

    public string Directory => _repository.Root;

    /// <summary>The current version, or null before a model has loaded.</summary>
    public LoadedModel? Current => _current;

    public long ReloadFailures => Interlocked.Read(ref _reloadFailures);

    /// <summary>Raised after a version becomes current.</summary>
    public event Action<LoadedModel>? VersionActivated;

    /// <summary>Current first, then previous versions still in their grace period.</summary>
    public IReadOnlyList<LoadedModel> Loaded
    {
        get
        {
            lock (_gate)
            {
                var list = new List<LoadedModel>(1 + _previous.Count);
                if (_current is not null)
                {
                    list.Add(_current);
                }
                list.AddRange(_previous);
                return list;
            }
        }
    }

    /// <summary>Loads what is current now, then watches for new versions.</summary>
    public async Task StartAsync(CancellationToken ct = default)
    {
        System.IO.Directory.CreateDirectory(_repository.Root);
        await RefreshAsync(ct);
        _watcher = new FileSystemWatcher(_repository.Root)
        {
            Filter = ModelRepository.CurrentPointer,
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.CreationTime | NotifyFilters.Size,
            EnableRaisingEvents = true,
        };
        _watcher.Created += (_, _) => Trigger();
        _watcher.Changed += (_, _) => Trigger();
        _watcher.Renamed += (_, _) => Trigger();
        _watcher.Error += (_, e) => _log.LogWarning(e.GetException(), "File watcher failed; the periodic poll still picks up new versions");
        _timer = new Timer(_ => Tick(), null, _settings.PollInterval, _settings.PollInterval);
    }

    private void Trigger() => _ = Task.Run(() => RefreshAsync(CancellationToken.None));

    private void Tick()
    {
        RetireExpired();
        Trigger();
    }

    /// <summary>Loads the version <c>current</c> names when it is not the one loaded. Safe to call at any time.</summary>
    public async Task RefreshAsync(CancellationToken ct)
    {
        await _loading.WaitAsync(ct);
        try
        {
            if (_disposed)
            {
                return;
            }
            string? version;
            try
            {
                version = _repository.CurrentVersion();
            }
            catch (IOException e)
            {
                _log.LogWarning("Could not read the current pointer in {Directory}: {Message}", _repository.Root, e.Message);
                return;
            }
            if (version is null || version == _current?.Version || version == _refusedVersion)
            {
                return;
            }
            ModelArtifact artifact;
            try
            {
                artifact = await Task.Run(() => ModelArtifact.Load(_repository.VersionDirectory(version)), ct);
            }
            catch (Exception e) when (e is ModelArtifactException or ArgumentException or IOException)
            {
                _refusedVersion = version;
                Interlocked.Increment(ref _reloadFailures);
                ReloadFailureCounter.Add(1);
                _log.LogError("Refused model version {Version}: {Reason}. Still serving {Serving}.", version, e.Message,
                    _current?.Version ?? "nothing");
                return;
            }
            Activate(new LoadedModel(artifact, DateTimeOffset.UtcNow));
        }
        finally
        {
            _loading.Release();
        }
    }

    private void Activate(LoadedModel model)
    {
        lock (_gate)
        {
            if (_current is not null)
            {
                _current.RetireAt = DateTimeOffset.UtcNow + _settings.GracePeriod;
                _previous.Insert(0, _current);
            }
            _current = model;
            _refusedVersion = null;
        }
        ReloadCounter.Add(1);
        _log.LogInformation("Serving model version {Version}: {Candidates} candidates, dimension {Dimension}",
            model.Version, model.Artifact.Candidates.Count, model.Artifact.Manifest.OutputDim);
        RetireExpired();
        VersionActivated?.Invoke(model);
    }

    private void RetireExpired()
    {
        var now = DateTimeOffset.UtcNow;
        List<LoadedModel> expired;
        lock (_gate)
        {
            expired = _previous.Where(p => p.RetireAt <= now).ToList();
            _previous.RemoveAll(expired.Contains);
        }
        foreach (var model in expired)
        {
            model.Retire();
            _log.LogInformation("Unloaded model version {Version} after its grace period", model.Version);
        }
    }

    /// <summary>
    /// A lease on the named version (empty = current). Null with <paramref name="reason"/> when nothing is loaded or
    /// the version is not among those loaded.
    /// </summary>
    public ModelLease? TryAcquire(string? version, out string reason)
    {
        lock (_gate)
        {
            if (_current is null)
            {
                reason = $"no model loaded yet from {_repository.Root}";
                return null;
            }
            var model = string.IsNullOrEmpty(version) || version == _current.Version
                ? _current
                : _previous.FirstOrDefault(p => p.Version == version && p.RetireAt > DateTimeOffset.UtcNow);
            if (model is null || !model.TryAcquire())
            {
                reason = $"model version '{version}' is not loaded; loaded: {string.Join(", ", Loaded.Select(m => m.Version))}";
                return null;
            }
            reason = "";
            return new ModelLease(model);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
        }
        _watcher?.Dispose();
        _timer?.Dispose();
        foreach (var model in Loaded)
        {
            model.Retire();
        }
    }
}
