# QueryTower.Service: runtime image without the SDK or TorchSharp. Build from the repository root:
#   docker build -f docker/query-tower.Dockerfile -t retrieval/query-tower .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Build.targets Directory.Packages.props .editorconfig ./
COPY build/ build/
COPY protos/ protos/
COPY Retrieval.Core/ Retrieval.Core/
COPY Retrieval.ServiceDefaults/ Retrieval.ServiceDefaults/
COPY QueryTower.Service/ QueryTower.Service/
RUN dotnet publish QueryTower.Service/QueryTower.Service.csproj -c Release -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app .
ENV Urls=http://0.0.0.0:5100 \
    Model__Directory=/models \
    CandidateTower__Address=http://candidate-tower:5101 \
    Metrics__Url=http://0.0.0.0:9100
EXPOSE 5100 9100
VOLUME /models
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s CMD ["dotnet", "QueryTower.Service.dll", "healthcheck", "http://127.0.0.1:5100"]
ENTRYPOINT ["dotnet", "QueryTower.Service.dll"]
